// Removes the previous build, so that a file deleted from src/ never lingers in dist/ (and in the tarball).
import { rmSync } from 'node:fs';
rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
