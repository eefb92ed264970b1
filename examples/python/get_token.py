#!/usr/bin/env python3
"""A token-broker caller in Python: botocore's SigV4Auth signs, requests sends.

    python3 examples/python/get_token.py ENDPOINT CONNECTION [MIN_TTL]

ENDPOINT is the broker's base URL with its stage (https://abc.execute-api.eu-west-1.amazonaws.com/prod, or
http://127.0.0.1:8787 for `npm start`). Credentials come from botocore's default chain, which reads
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN first; the region from AWS_REGION (or
AWS_DEFAULT_REGION), else from an execute-api hostname. On success it prints the broker's 200 JSON body
on stdout and exits 0; on an error it prints the broker's error JSON on stderr and exits 1 (2 for usage).

As a module, `BrokerClient` follows the same rules as the TypeScript client (README, "Client rules"):
- cache one token per connection in process; serve it while it has min_ttl + skew seconds left, counted
  from the time the request was sent; ask the broker for min_ttl + skew;
- retry 429 and 503 (and network errors) within a deadline, after Retry-After plus jitter when given, with
  full-jitter backoff otherwise; never sleep past the deadline; never retry 400/403/404/500/502;
- `call_upstream` reports a token its upstream rejected with 401 once, and sends the request again with a
  new token, unless the broker answers `deferred` (it keeps serving that token): then the 401 is returned.
Nothing here logs or prints a token, except the 200 body the command line is asked to print.
"""

import email.utils
import json
import math
import os
import random
import re
import sys
import threading
import time
from urllib.parse import quote, urlsplit

import botocore.session
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

SERVICE = 'execute-api'
CONNECTION_NAME = re.compile(r'^[a-z0-9-]{1,64}$')
RETRYABLE = {429, 503, 504}
MAX_TTL = 86400


class BrokerError(Exception):
    """A broker answer other than 200, or no answer. `body` is the broker's error JSON (a dict)."""

    def __init__(self, status, body, retry_after=None):
        super().__init__(f"token broker answered {status} {body.get('error')}: {body.get('message', '')}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


def region_from_host(hostname):
    m = re.search(r'\.execute-api\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$', hostname.lower())
    return m.group(1) if m else None


def parse_retry_after(value, now):
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None if absent or garbage."""
    if value is None or not value.strip():
        return None
    if value.strip().isdigit():
        return int(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - now + 0.999))


class BrokerClient:
    def __init__(self, endpoint, region=None, credentials=None, session=None, min_ttl=60, skew=5,
                 deadline=10.0, attempt_timeout=5.0, base_delay=0.1, max_delay=2.0,
                 now=time.time, sleep=time.sleep, rand=random.random):
        url = urlsplit(endpoint)
        loopback = url.hostname in ('localhost', '::1') or (url.hostname or '').startswith('127.')
        if url.scheme != 'https' and not (url.scheme == 'http' and loopback):
            raise ValueError('endpoint must use https (http only for loopback)')
        self.endpoint = endpoint.rstrip('/')
        self.region = region or region_from_host(url.hostname or '') or _env_region()
        if not self.region:
            raise ValueError('no region: set AWS_REGION or use an execute-api hostname')
        self.credentials = credentials or botocore.session.get_session().get_credentials()
        self.http = session or requests.Session()
        self.min_ttl, self.skew, self.deadline, self.attempt_timeout = min_ttl, skew, deadline, attempt_timeout
        self.base_delay, self.max_delay = base_delay, max_delay
        self.now, self.sleep, self.rand = now, sleep, rand
        self._cache = {}  # connection -> (token body dict, expires at: send time + expires_in)
        self._deferred = {}  # (connection, token) -> until
        self._lock = threading.Lock()

    def get_token(self, connection, min_ttl=None):
        """The broker's 200 body (a dict) for a token with at least min_ttl seconds left."""
        _check_connection(connection)
        min_ttl = self.min_ttl if min_ttl is None else min_ttl
        if not isinstance(min_ttl, int) or not 0 <= min_ttl <= MAX_TTL:
            raise ValueError(f'min_ttl must be an integer from 0 to {MAX_TTL}')
        with self._lock:
            cached = self._cache.get(connection)
            if cached and cached[1] - self.now() >= min_ttl + self.skew:
                return cached[0]
        asked = min(MAX_TTL, min_ttl + self.skew)

        def attempt(timeout):
            sent = self.now()
            body = _json(self._send('GET', f'/tokens/{quote(connection)}?min_ttl={asked}', None, timeout))
            if not isinstance(body.get('access_token'), str) or not isinstance(body.get('expires_in'), int):
                # Never echo the body: it may hold a token.
                raise BrokerError(200, {'error': 'internal', 'message': 'token broker answered 200 with an unusable body'})
            return body, sent + body['expires_in']

        body, expires_at = self._with_retries(attempt)
        with self._lock:
            self._cache[connection] = (body, expires_at)
        return body

    def invalidate(self, connection, access_token):
        """Reports a rejected token; returns the broker's answer, e.g. {'invalidated': True}."""
        _check_connection(connection)
        with self._lock:
            until = self._deferred.get((connection, access_token))
            if until is not None and until > self.now():
                # Still deferred: the token stays in service here too (it was never dropped).
                return {'invalidated': False, 'reason': 'deferred', 'retry_after': math.ceil(until - self.now())}
            cached = self._cache.get(connection)
            dropped = cached if cached and cached[0].get('access_token') == access_token else None
            if dropped:
                del self._cache[connection]
        payload = json.dumps({'access_token': access_token}).encode()

        def attempt(timeout):
            return _json(self._send('POST', f'/tokens/{quote(connection)}/invalidate', payload, timeout))

        def keep():
            # The broker keeps serving this token (deferred, or the report did not get through): so does this process.
            with self._lock:
                if dropped and connection not in self._cache:
                    self._cache[connection] = dropped

        try:
            answer = self._with_retries(attempt)
        except BrokerError:
            keep()
            raise
        if answer.get('reason') == 'deferred':
            with self._lock:
                self._deferred[(connection, access_token)] = self.now() + int(answer.get('retry_after', 0))
            keep()
        return answer

    def call_upstream(self, connection, method, url, min_ttl=None, **kwargs):
        """requests.request with `Authorization: Bearer <token>`; a 401 is healed once (see the module doc)."""
        token = self.get_token(connection, min_ttl)['access_token']
        res = self._upstream(method, url, token, kwargs)
        if res.status_code != 401:
            return res
        answer = self.invalidate(connection, token)
        if answer.get('reason') == 'deferred':
            return res  # the broker keeps serving this token: sending it again would be refused again
        fresh = self.get_token(connection, min_ttl)['access_token']
        if fresh == token:
            return res
        return self._upstream(method, url, fresh, kwargs)

    def _upstream(self, method, url, token, kwargs):
        # kwargs is not changed: a healed 401 replays the request with the same headers, body and options.
        rest = {k: v for k, v in kwargs.items() if k != 'headers'}
        headers = {k: v for k, v in (kwargs.get('headers') or {}).items() if k.lower() != 'authorization'}
        headers['Authorization'] = f'Bearer {token}'
        return self.http.request(method, url, headers=headers, **rest)

    def _send(self, method, path, body, timeout):
        headers = {'Accept': 'application/json'}
        if body is not None:
            headers['Content-Type'] = 'application/json'
        request = AWSRequest(method=method, url=self.endpoint + path, data=body, headers=headers)
        if self.credentials is None:
            raise BrokerError(0, {'error': 'forbidden', 'message': 'no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)'})
        SigV4Auth(self.credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(request)
        prepared = request.prepare()
        try:
            res = self.http.request(method, prepared.url, headers=dict(prepared.headers), data=prepared.body,
                                    timeout=timeout, allow_redirects=False)
        except requests.RequestException as e:
            raise BrokerError(0, {'error': 'unavailable', 'message': f'token broker unreachable: {type(e).__name__}'}) from None
        if res.status_code in (200, 204):
            return res
        try:
            error = res.json()
        except ValueError:
            error = None
        if not isinstance(error, dict) or 'error' not in error:
            code = {400: 'invalid_request', 403: 'forbidden', 404: 'not_found', 429: 'rate_limited', 503: 'unavailable'}
            error = {'error': code.get(res.status_code, 'internal'), 'message': (error or {}).get('message', '') if isinstance(error, dict) else ''}
        raise BrokerError(res.status_code, error, parse_retry_after(res.headers.get('Retry-After'), self.now()))

    def _with_retries(self, attempt):
        deadline = self.now() + self.deadline
        n = 0
        while True:
            remaining = deadline - self.now()
            if remaining <= 0:
                raise BrokerError(0, {'error': 'unavailable', 'message': 'token broker call ran out of time'})
            try:
                return attempt(min(self.attempt_timeout, remaining))
            except BrokerError as e:
                unreachable = e.status == 0 and e.body.get('error') == 'unavailable'
                if e.status not in RETRYABLE and not unreachable:
                    raise
                if e.retry_after is not None:
                    delay = e.retry_after + self.rand() * self.base_delay
                else:
                    delay = self.rand() * min(self.max_delay, self.base_delay * 2 ** n)
                if self.now() + delay >= deadline:
                    raise  # never sleep past the deadline: the caller gets the error (and its Retry-After) now
                self.sleep(delay)
                n += 1


def _json(res):
    try:
        body = res.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BrokerError(res.status_code, {'error': 'internal', 'message': 'token broker answered with an unusable body'})
    return body


def _compact(body):
    """JSON as the broker writes it (no spaces), so the 200 body is printed as received."""
    return json.dumps(body, separators=(',', ':'), ensure_ascii=False)


def _check_connection(connection):
    if not CONNECTION_NAME.match(connection or ''):
        raise ValueError("connection names are lowercase letters, digits and '-', at most 64 characters")


def _env_region():
    return os.environ.get('AWS_REGION') or os.environ.get('AWS_DEFAULT_REGION')


def main(argv):
    if len(argv) not in (3, 4) or (len(argv) == 4 and not argv[3].isdigit()):
        print(__doc__.split('\n\n')[1], file=sys.stderr)
        return 2
    endpoint, connection = argv[1], argv[2]
    try:
        client = BrokerClient(endpoint)
        body = client.get_token(connection, int(argv[3]) if len(argv) == 4 else None)
    except BrokerError as e:
        print(_compact(e.body), file=sys.stderr)
        return 1
    except ValueError as e:
        print(_compact({'error': 'invalid_request', 'message': str(e)}), file=sys.stderr)
        return 1
    print(_compact(body))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
