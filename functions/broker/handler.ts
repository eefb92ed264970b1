/**
 * Lambda entry point (API Gateway REST API proxy integration, IAM auth). Dependencies are built once per
 * container at cold start; a bad config fails the init loudly instead of every request.
 */
import type { APIGatewayProxyResult, Context } from 'aws-lambda';
import { buildAwsHandler } from './compose.js';
import type { ProxyEvent } from './http.js';

const serve = buildAwsHandler();

export const handler = (event: ProxyEvent, context: Context): Promise<APIGatewayProxyResult> => serve(event, context);
