/**
 * Checks HTTP responses against `openapi.yaml`.
 *
 * - The document itself: `@seriousme/openapi-schema-validator` (the OpenAPI 3.1 JSON Schema, tested on the
 *   APIs.guru corpus), which also resolves its `$ref`s.
 * - Bodies: Ajv's JSON Schema 2020-12 validator (OpenAPI 3.1 schemas are 2020-12), in strict mode with
 *   formats, compiled from the document's own `components/schemas` so that `$ref`s resolve as written.
 * - The rest is small and explicit here: which operation a request hits (path template + method), which
 *   response object its status selects (no `default`: an undocumented status is an error), required
 *   headers and their schemas, and the media type.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';

const OPENAPI_PATH = join(import.meta.dirname, '..', '..', 'openapi.yaml');
const DOC_ID = 'https://token-broker.invalid/openapi.json';

type Json = Record<string, unknown>;

export interface Observed {
  method: string;
  /** The concrete path, without query. */
  path: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface Contract {
  doc: Json;
  /** Errors of one response against the document; empty when it conforms. */
  check(res: Observed): string[];
  /** The (operationId, status) a response was checked under. */
  operationOf(res: Observed): { operationId: string; status: string } | undefined;
  /** Every documented (operationId, status). */
  documented(): Array<{ operationId: string; status: string }>;
  /** Validates a value against a named component schema (for canned examples). */
  validateSchema(name: string, value: unknown): string[];
  /** Every `examples` entry of every response media type, with its schema's verdict. */
  examples(): Array<{ where: string; errors: string[] }>;
}

export async function loadContract(text = readFileSync(OPENAPI_PATH, 'utf8')): Promise<Contract> {
  const validator = new Validator();
  const result = await validator.validate(text);
  if (!result.valid) throw new Error(`openapi.yaml is not a valid OpenAPI document: ${JSON.stringify(result.errors, null, 2)}`);
  if (validator.version !== '3.1') throw new Error(`openapi.yaml must be OpenAPI 3.1, not ${validator.version}`);
  const doc = parse(text) as Json;

  // The ajv-formats default export is CommonJS; under NodeNext its function is the module's default.
  const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  // Only the schemas go to Ajv (the rest of an OpenAPI document is not JSON Schema), under an id so that
  // `#/components/schemas/X` references resolve within it.
  ajv.addSchema({ $id: DOC_ID, ...componentsAsDefs(doc) });
  const compiled = new Map<string, ValidateFunction>();
  const schemaFor = (ref: string): ValidateFunction => {
    let fn = compiled.get(ref);
    if (!fn) {
      const name = /^#\/components\/schemas\/([^/]+)$/.exec(ref)?.[1];
      if (!name) throw new Error(`openapi.yaml: response schemas must be $refs to #/components/schemas, not ${ref}`);
      fn = ajv.getSchema(`${DOC_ID}#/$defs/${name}`);
      if (!fn) throw new Error(`openapi.yaml: no schema ${ref}`);
      compiled.set(ref, fn);
    }
    return fn;
  };
  const errorsOf = (fn: ValidateFunction, value: unknown, where: string) =>
    fn(value)
      ? []
      : (fn.errors ?? []).map((e) => `${where}${e.instancePath || '/'} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`);

  const resolve = (node: unknown): Json => {
    let n = node as Json;
    for (let i = 0; i < 10 && typeof n?.$ref === 'string'; i++) n = pointer(doc, n.$ref as string) as Json;
    return n;
  };

  const operations: Array<{ template: string; regex: RegExp; method: string; op: Json }> = [];
  for (const [template, item] of Object.entries(doc.paths as Record<string, Json>)) {
    const segments = template.split('/').map((s) => (/^\{[^}]+\}$/.test(s) ? '[^/]+' : s.replace(/[.*+?^$()|[\]\\]/g, '\\$&')));
    const regex = new RegExp(`^${segments.join('/')}$`);
    for (const [method, op] of Object.entries(item)) {
      if (['get', 'put', 'post', 'delete', 'patch', 'head', 'options'].includes(method))
        operations.push({ template, regex, method, op: op as Json });
    }
  }
  const find = (res: Observed) => operations.find((o) => o.method === res.method.toLowerCase() && o.regex.test(res.path));

  return {
    doc,
    operationOf(res) {
      const o = find(res);
      const status = String(res.status);
      return o && (o.op.responses as Json)[status] ? { operationId: String(o.op.operationId), status } : undefined;
    },
    documented() {
      return operations.flatMap((o) =>
        Object.keys(o.op.responses as Json).map((status) => ({ operationId: String(o.op.operationId), status })),
      );
    },
    check(res) {
      const o = find(res);
      if (!o) return [`${res.method} ${res.path}: no such operation in openapi.yaml`];
      const where = `${res.method} ${o.template} ${res.status}`;
      const documented = (o.op.responses as Json)[String(res.status)];
      if (!documented) return [`${where}: status not documented`];
      const response = resolve(documented);
      const errors: string[] = [];
      const header = (name: string) => {
        const key = Object.keys(res.headers).find((k) => k.toLowerCase() === name.toLowerCase());
        const v = key === undefined ? undefined : res.headers[key];
        return Array.isArray(v) ? v.join(', ') : v;
      };
      for (const [name, h] of Object.entries((response.headers ?? {}) as Json)) {
        const spec = resolve(h);
        const value = header(name);
        if (value === undefined) {
          if (spec.required) errors.push(`${where}: header ${name} is required`);
          continue;
        }
        const schema = spec.schema as Json;
        const typed = schema.type === 'integer' ? (/^\d+$/.test(value) ? Number(value) : value) : value;
        const fn = ajv.compile(schema);
        errors.push(...errorsOf(fn, typed, `${where} header ${name}`));
      }
      const content = response.content as Record<string, Json> | undefined;
      if (!content) {
        if (res.body !== '') errors.push(`${where}: a body where the document has none`);
        return errors;
      }
      const type = (header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      const media = content[type];
      if (!media) return [...errors, `${where}: content-type ${type || '(none)'} is not one of ${Object.keys(content).join(', ')}`];
      let body: unknown;
      try {
        body = JSON.parse(res.body);
      } catch {
        return [...errors, `${where}: the body is not JSON`];
      }
      const ref = (media.schema as Json).$ref as string;
      errors.push(...errorsOf(schemaFor(ref), body, `${where} body`));
      return errors;
    },
    validateSchema(name, value) {
      return errorsOf(schemaFor(`#/components/schemas/${name}`), value, name);
    },
    examples() {
      const out: Array<{ where: string; errors: string[] }> = [];
      for (const o of operations) {
        for (const [status, r] of Object.entries(o.op.responses as Json)) {
          for (const [type, media] of Object.entries((resolve(r).content ?? {}) as Record<string, Json>)) {
            for (const [name, example] of Object.entries((media.examples ?? {}) as Record<string, Json>)) {
              const where = `${o.op.operationId} ${status} ${type} example ${name}`;
              out.push({ where, errors: errorsOf(schemaFor((media.schema as Json).$ref as string), resolve(example).value, where) });
            }
          }
        }
      }
      return out;
    },
  };
}

/** `components/schemas` as `$defs`, with their `#/components/schemas/X` references rewritten to `#/$defs/X`. */
function componentsAsDefs(doc: Json): Json {
  const schemas = ((doc.components as Json | undefined)?.schemas ?? {}) as Json;
  const text = JSON.stringify(schemas).replace(/"#\/components\/schemas\//g, '"#/$defs/');
  return { $defs: JSON.parse(text) as Json };
}

function pointer(doc: Json, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`openapi.yaml: only local $refs are supported, not ${ref}`);
  let node: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    node = (node as Json)?.[key];
    if (node === undefined) throw new Error(`openapi.yaml: dangling $ref ${ref}`);
  }
  return node;
}
