/**
 * The credential circuit (docs/protocol.md "Credential circuit"): pure decisions over the `Circuit` stored in a connection's
 * item. A credential or configuration error that survived a secret re-read opens it; while it is open no
 * upstream request is made, until the secret's version changes (re-read at most every SECRET_CHECK_MS,
 * fleet-wide), the connection's config changes, or the probe time comes (5 min, doubling up to 1 h).
 */
import { BrokerError } from './errors.js';
import { PROBE_FIRST_MS, PROBE_MAX_MS, SECRET_CHECK_MS } from './limits.js';
import type { Circuit } from './ports.js';

/**
 * - `closed`: no circuit, or one opened under another config;
 * - `probe`: its probe time has come: one upstream request with the current secret;
 * - `check`: time to re-read the secret and see whether ops changed it;
 * - `open`: refuse with 502 without any I/O.
 */
export type CircuitState = 'closed' | 'probe' | 'check' | 'open';

export function circuitState(c: Circuit | undefined, now: number, configHash: string): CircuitState {
  if (!c || !c.configHashes.includes(configHash)) return 'closed';
  if (now >= c.probeAt) return 'probe';
  if (now >= c.checkedAt + SECRET_CHECK_MS) return 'check';
  return 'open';
}

/** The probe interval after `probes` failed probes: 5 min, 10, 20, 40, then 1 h. @internal */
export function probeDelayMs(probes: number): number {
  return Math.min(PROBE_MAX_MS, PROBE_FIRST_MS * 2 ** Math.min(probes, 16));
}

/** How many config hashes a circuit remembers (old and new configs side by side during a deploy). */
const CONFIGS_REMEMBERED = 4;

/**
 * The circuit after a credential or configuration error with `secretVersion`, or after a probe that failed
 * in any way. A failed probe of the same secret and a known config doubles the probe interval; a new secret
 * or a new config starts over at 5 minutes. The same secret keeps the configs it already failed under.
 */
export function openCircuit(
  prev: Circuit | undefined,
  failure: { upstreamError: string; secretVersion: string; configHash: string },
  now: number,
): Circuit {
  const sameSecret = prev !== undefined && prev.secretVersion === failure.secretVersion;
  const known = sameSecret && prev.configHashes.includes(failure.configHash);
  const probes = known ? prev.probes + 1 : 0;
  const configHashes = sameSecret
    ? [...prev.configHashes.filter((h) => h !== failure.configHash), failure.configHash].slice(-CONFIGS_REMEMBERED)
    : [failure.configHash];
  return {
    upstreamError: failure.upstreamError,
    openedAt: known ? prev.openedAt : now,
    probeAt: now + probeDelayMs(probes),
    probes,
    secretVersion: failure.secretVersion,
    configHashes,
    checkedAt: now,
  };
}

/** A probe that did not succeed (the upstream down, the ledger refusing...): the next probe waits as for a failure. */
export function probeFailed(c: Circuit, configHash: string, now: number): Circuit {
  return openCircuit(c, { upstreamError: c.upstreamError, secretVersion: c.secretVersion, configHash }, now);
}

/** The 502 callers get while the circuit is open. */
export function circuitError(c: Circuit): BrokerError {
  return new BrokerError(
    'upstream_error',
    `upstream refused the credentials (${c.upstreamError}); no token requests until the secret or the config changes`,
    { upstreamError: c.upstreamError, refusal: 'circuit_open' },
  );
}

/** Until when an invalidation is deferred by an open circuit: its next secret check or probe. */
export function circuitRetryAt(c: Circuit): number {
  return Math.min(c.probeAt, c.checkedAt + SECRET_CHECK_MS);
}
