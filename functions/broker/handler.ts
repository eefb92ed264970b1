/**
 * Lambda entry point: API Gateway REST API proxy requests (IAM auth), and the scheduled budget-gauge event.
 * Dependencies are built once per container at cold start (top-level await); a bad config fails the init
 * loudly instead of every request.
 */
import type { Context } from 'aws-lambda';
import { type AwsEntry, buildAwsEntry } from './compose.js';

const entry = await buildAwsEntry();

export const handler = (event: Parameters<AwsEntry>[0], context: Context): ReturnType<AwsEntry> => entry(event, context);
