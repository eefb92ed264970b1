/**
 * Reads one file out of a zip archive (the deployed Lambda's code package) with fflate: small, no
 * dependencies, and it inflates only the entry asked for, into a buffer of the size the archive declares,
 * so a hostile archive cannot make it allocate more than `maxBytes`.
 */
import { unzipSync } from 'fflate';

export class ZipError extends Error {
  override readonly name = 'ZipError';
}

/** The content of `name` (a path from the archive's root), or undefined if the archive has no such file. */
export function readZipEntry(zip: Uint8Array, name: string, maxBytes: number): Uint8Array | undefined {
  let tooLarge: number | undefined;
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(zip, {
      filter: (f) => {
        if (f.name !== name) return false;
        if (f.originalSize > maxBytes) {
          tooLarge = f.originalSize;
          return false;
        }
        return true;
      },
    });
  } catch (e) {
    throw new ZipError(`not a readable zip archive (${(e as Error)?.message ?? 'unknown error'})`);
  }
  if (tooLarge !== undefined) throw new ZipError(`${name} is ${tooLarge} bytes, more than the ${maxBytes} allowed`);
  return files[name];
}
