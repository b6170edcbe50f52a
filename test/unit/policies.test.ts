// Every policy folder shipped under examples/ compiles and passes its Cerbos policy tests
// (tests/*_test.yaml) with the real binary — SPEC §3: a broken example policy fails the build.
import { execFile } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cerbosBinaryPath } from "../../src/pdp/cerbos-binary.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const EXAMPLES = join(ROOT, "examples");
const QUICKSTART = join(EXAMPLES, "quickstart", "policies");

/** Every directory named `policies` under dir (not descending into one once found). */
async function policyDirs(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === "node_modules") continue;
    const path = join(dir, entry.name);
    if (entry.name === "policies") found.push(path);
    else found.push(...(await policyDirs(path)));
  }
  return found.sort();
}

function compile(dir: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cerbosBinaryPath(), ["compile", dir], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

const dirs = await policyDirs(EXAMPLES);

describe("example policies", () => {
  it("include the quickstart policies", () => {
    expect(dirs).toContain(QUICKSTART);
  });

  it.each(dirs.map((d) => [relative(ROOT, d), d]))("%s compiles and passes its policy tests", async (_name, dir) => {
    const testFiles = (await readdir(join(dir, "tests")).catch(() => [])).filter((f) => f.endsWith("_test.yaml"));
    expect(testFiles.length, `${dir} has no tests/*_test.yaml`).toBeGreaterThan(0);
    const { code, output } = await compile(dir);
    expect(code, output).toBe(0);
    expect(output).toMatch(/tests executed/);
    expect(output).not.toMatch(/FAILED/);
  });
});

describe("cerbos compile fails on a broken copy", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "policies-test-"));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  async function brokenCopy(name: string, file: string, edit: (text: string) => string): Promise<string> {
    const dir = join(tmp, name);
    await cp(QUICKSTART, dir, { recursive: true });
    const path = join(dir, file);
    const before = await readFile(path, "utf8");
    const after = edit(before);
    expect(after).not.toBe(before);
    await writeFile(path, after);
    return dir;
  }

  it("on invalid YAML", async () => {
    const dir = await brokenCopy("syntax", "order.yaml", (t) => `${t}\n  - this: [is not closed\n`);
    const { code, output } = await compile(dir);
    expect(code, output).not.toBe(0);
  });

  it("on a policy that contradicts its tests (the tests really run)", async () => {
    // Let anonymous callers read the API: tests/route_test.yaml expects a deny.
    const dir = await brokenCopy("behaviour", "route.yaml", (t) => t.replace('roles: ["user", "admin"]', 'roles: ["user", "admin", "anonymous"]'));
    const { code, output } = await compile(dir);
    expect(code, output).not.toBe(0);
    expect(output).toMatch(/FAILED/);
  });
});
