/**
 * The real time, timers and randomness of the process, behind the core's ports (core/ports.ts): the core
 * itself never reads the wall clock, starts a timer or draws a random number.
 */
import { randomUUID } from 'node:crypto';
import type { Clock, Ids, Timers } from '../core/ports.js';

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export const randomIds: Ids = { next: () => randomUUID() };

export const systemTimers: Timers = { timeout: (ms) => AbortSignal.timeout(ms) };
