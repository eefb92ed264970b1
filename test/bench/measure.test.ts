/**
 * The bench's hot-path timer (bench/lib.ts measure): every probe gets its calls, the warm-up round is dropped,
 * and the calls interleave in an order that changes, so that no probe always runs right after the same one
 * (a DynamoDB call just before warms the connection and the server for the next).
 */
import { describe, expect, it } from 'vitest';
import { ascending, measure, seededRandom, type Probe } from '../../bench/lib';

function recording(names: string[], perRound: Record<string, number> = {}) {
  const calls: string[] = [];
  const probes: Probe[] = names.map((name) => ({
    name,
    run: async () => void calls.push(name),
    ...(perRound[name] !== undefined ? { perRound: perRound[name] } : {}),
  }));
  return { calls, probes };
}

describe('bench measure()', () => {
  it('runs each probe perRound times a round (its own perRound if set), and keeps all but the warm-up round', async () => {
    const { calls, probes } = recording(['a', 'b', 'c'], { c: 12 });
    const stats = await measure(probes, 2, 3);
    expect(calls.filter((c) => c === 'a')).toHaveLength(9);
    expect(calls.filter((c) => c === 'c')).toHaveLength(36);
    expect(stats.a!.n).toBe(6);
    expect(stats.c!.n).toBe(24);
  });

  it('spreads the extra calls of a larger perRound between the others, not in one block', async () => {
    const { calls, probes } = recording(['a', 'b'], { b: 4 });
    await measure(probes, 0, 2);
    // 4 turns: b every turn, a every other turn; never more than two b in a row.
    expect(calls.join('')).not.toMatch(/bbb/);
    expect(calls.filter((c) => c === 'a')).toHaveLength(2);
  });

  it('changes the order from turn to turn: each probe follows each of the others', async () => {
    const { calls, probes } = recording(['a', 'b', 'c', 'd']);
    await measure(probes, 3, 10);
    const followers = new Map<string, Set<string>>();
    for (let i = 1; i < calls.length; i++) {
      if (!followers.has(calls[i]!)) followers.set(calls[i]!, new Set());
      followers.get(calls[i]!)!.add(calls[i - 1]!);
    }
    for (const name of ['a', 'b', 'c', 'd'])
      expect([...followers.get(name)!].filter((p) => p !== name).sort()).toEqual(['a', 'b', 'c', 'd'].filter((p) => p !== name));
  });

  it('seededRandom repeats for a seed and stays in [0, 1)', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(ascending([3, 1, 2])).toEqual([1, 2, 3]);
  });
});
