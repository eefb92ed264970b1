import { describe, expect, it } from 'vitest';
import { isAllowed, matchesPattern, principalArn, principalFromArn } from '../../functions/core/authz.js';

const ACCT = '111122223333';
const OTHER = '444455556666';
const session = (name: string, s = 'sess-1', acct = ACCT, part = 'aws') => `arn:${part}:sts::${acct}:assumed-role/${name}/${s}`;
const role = (name: string, acct = ACCT, part = 'aws') => `arn:${part}:iam::${acct}:role/${name}`;

const allowed = (callerArn: string | undefined | null, patterns: string[]) => isAllowed(principalFromArn(callerArn), patterns);

describe('principalFromArn', () => {
  it('maps an assumed-role session to its role (E1)', () => {
    const p = principalFromArn(session('App', 'sess-1'));
    expect(p).toEqual({ kind: 'role', partition: 'aws', account: ACCT, name: 'App', sessionName: 'sess-1' });
    expect(principalArn(p!)).toBe(role('App'));
  });

  it('parses IAM roles with paths and users with paths', () => {
    expect(principalFromArn(role('service-role/App'))).toEqual({ kind: 'role', partition: 'aws', account: ACCT, name: 'App' });
    const u = principalFromArn(`arn:aws:iam::${ACCT}:user/ops/team/alice`);
    expect(u).toEqual({ kind: 'user', partition: 'aws', account: ACCT, path: 'ops/team/', name: 'alice' });
    expect(principalArn(u!)).toBe(`arn:aws:iam::${ACCT}:user/ops/team/alice`);
    expect(principalFromArn(`arn:aws-cn:sts::${ACCT}:assumed-role/App/s`)?.partition).toBe('aws-cn');
  });

  it.each([
    ['root', `arn:aws:iam::${ACCT}:root`],
    ['federated user', `arn:aws:sts::${ACCT}:federated-user/alice`],
    ['STS root-ish', `arn:aws:sts::${ACCT}:root`],
    ['empty', ''],
    ['not an ARN', 'App'],
    ['short account', `arn:aws:sts::11112222333:assumed-role/App/s`],
    ['unknown partition', `arn:aws-xx:sts::${ACCT}:assumed-role/App/s`],
    ['assumed role without session', `arn:aws:sts::${ACCT}:assumed-role/App`],
    ['assumed role with extra segment', `arn:aws:sts::${ACCT}:assumed-role/App/s/extra`],
    ['service principal', 'lambda.amazonaws.com'],
    ['trailing newline', `${session('App')}\n`],
    ['group', `arn:aws:iam::${ACCT}:group/admins`],
    ['overlong', `arn:aws:sts::${ACCT}:assumed-role/App/${'s'.repeat(3000)}`],
  ])('refuses %s (E5)', (_label, arn) => {
    expect(principalFromArn(arn)).toBeUndefined();
  });

  it('refuses a missing identity (E5)', () => {
    expect(principalFromArn(undefined)).toBeUndefined();
    expect(principalFromArn(null)).toBeUndefined();
    expect(isAllowed(undefined, ['arn:aws:iam::*:role/*'])).toBe(false);
  });
});

describe('isAllowed / matchesPattern', () => {
  const patterns = [role('App')];

  it('admits an allowlisted role through any of its sessions with the same decision (E1, E2)', () => {
    for (const s of ['sess-1', 'sess-2', 'i-0123456789abcdef0', 'botocore-session-1700000000', 'a@b.c=,+-']) {
      expect(allowed(session('App', s), patterns)).toBe(true);
    }
    expect(allowed(session('Other', 'sess-1'), patterns)).toBe(false);
  });

  it('matches a configured role with a path by account and role name (E3)', () => {
    expect(allowed(session('App'), [role('service-role/App')])).toBe(true);
    expect(allowed(session('App'), [role('a/b/c/App')])).toBe(true);
    expect(allowed(session('App', 's', OTHER), [role('service-role/App')])).toBe(false);
    expect(allowed(session('App2'), [role('service-role/App')])).toBe(false);
  });

  it.each([
    ['App2', session('App2')],
    ['XApp', session('XApp')],
    ['app (case)', session('app')],
    ['App in another account', session('App', 'sess-1', OTHER)],
    ['App in aws-cn', session('App', 'sess-1', ACCT, 'aws-cn')],
    ['App in aws-us-gov', session('App', 'sess-1', ACCT, 'aws-us-gov')],
  ])('denies %s (E4)', (_label, arn) => {
    expect(allowed(arn, patterns)).toBe(false);
  });

  it.each([
    ['root', `arn:aws:iam::${ACCT}:root`],
    ['federated user', `arn:aws:sts::${ACCT}:federated-user/App`],
    ['malformed', `arn:aws:sts::${ACCT}:assumed-role/App`],
    ['IAM user not allowlisted', `arn:aws:iam::${ACCT}:user/App`],
  ])('denies %s even with a catch-all role pattern (E5)', (_label, arn) => {
    expect(allowed(arn, [role('*'), `arn:aws:iam::${ACCT}:role/App`])).toBe(false);
  });

  it('denies everyone when the pattern list is empty (deny by default)', () => {
    expect(allowed(session('App'), [])).toBe(false);
  });

  it('`*` matches within one segment', () => {
    expect(allowed(session('payments-api'), [role('payments-*')])).toBe(true);
    expect(allowed(session('payments-'), [role('payments-*')])).toBe(true);
    expect(allowed(session('payment'), [role('payments-*')])).toBe(false);
    expect(allowed(session('tax-api'), [role('payments-*')])).toBe(false);
    expect(allowed(session('x-payments-api'), [role('payments-*')])).toBe(false);
    expect(allowed(session('payments-api'), [role('*-api')])).toBe(true);
    expect(allowed(session('payments.api'), [role('payments?api')])).toBe(false); // `?` is literal
    expect(allowed(session('paymentsXapi'), [role('payments.api')])).toBe(false); // `.` is literal
  });

  it('`*` never crosses `/`', () => {
    const alice = `arn:aws:iam::${ACCT}:user/ops/alice`;
    expect(allowed(alice, [`arn:aws:iam::${ACCT}:user/*`])).toBe(false);
    expect(allowed(alice, [`arn:aws:iam::${ACCT}:user/*/*`])).toBe(true);
    expect(allowed(alice, [`arn:aws:iam::${ACCT}:user/ops/*`])).toBe(true);
    expect(allowed(`arn:aws:iam::${ACCT}:user/ops/team/alice`, [`arn:aws:iam::${ACCT}:user/ops/*`])).toBe(false);
    expect(allowed(`arn:aws:iam::${ACCT}:user/alice`, [`arn:aws:iam::${ACCT}:user/*`])).toBe(true);
  });

  it('`*` never crosses `:` (account and partition are separate segments)', () => {
    // A `*` in the resource cannot swallow the account.
    const p = principalFromArn(session('App'))!;
    expect(matchesPattern(p, `arn:aws:iam::*`)).toBe(false);
    expect(matchesPattern(p, `arn:aws:iam:*:role/App`)).toBe(false);
    expect(matchesPattern(p, `arn:aws:iam::${ACCT}:*`)).toBe(false);
    expect(matchesPattern(p, `arn:*`)).toBe(false);
    expect(matchesPattern(p, `*`)).toBe(false);
    // A `*` in a whole segment matches exactly that segment.
    expect(matchesPattern(p, `arn:aws:iam::*:role/App`)).toBe(true);
    expect(matchesPattern(p, `arn:*:iam::${ACCT}:role/App`)).toBe(true);
  });

  it('requires the iam service and the right principal type', () => {
    const p = principalFromArn(session('App'))!;
    expect(matchesPattern(p, `arn:aws:sts::${ACCT}:assumed-role/App/sess-1`)).toBe(false);
    expect(matchesPattern(p, `arn:aws:iam::${ACCT}:user/App`)).toBe(false);
    expect(matchesPattern(p, `arn:aws:iam::${ACCT}:role`)).toBe(false);
    const u = principalFromArn(`arn:aws:iam::${ACCT}:user/App`)!;
    expect(matchesPattern(u, role('App'))).toBe(false);
    expect(matchesPattern(u, `arn:aws:iam::${ACCT}:user/App`)).toBe(true);
  });

  it('matches user patterns including their path exactly', () => {
    const u = `arn:aws:iam::${ACCT}:user/ops/alice`;
    expect(allowed(u, [`arn:aws:iam::${ACCT}:user/ops/alice`])).toBe(true);
    expect(allowed(u, [`arn:aws:iam::${ACCT}:user/alice`])).toBe(false);
    expect(allowed(u, [`arn:aws:iam::${ACCT}:user/dev/alice`])).toBe(false);
    expect(allowed(`arn:aws:iam::${ACCT}:user/alice`, [`arn:aws:iam::${ACCT}:user/ops/alice`])).toBe(false);
    expect(allowed(u, [`arn:aws:iam::${OTHER}:user/ops/alice`])).toBe(false);
  });

  it('admits when any one of several patterns matches', () => {
    expect(allowed(session('tax-reporting', 's', OTHER), [role('tax-*'), role('tax-reporting', OTHER)])).toBe(true);
    expect(allowed(session('tax-other', 's', OTHER), [role('tax-*'), role('tax-reporting', OTHER)])).toBe(false);
  });
});
