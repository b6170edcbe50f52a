/**
 * Decision calls a test PDP has served, over both call shapes (CheckResources and AuthZEN
 * AccessEvaluationBatch), read from the PDP's own metrics once the count has stopped moving.
 * Use it where a test counts "PDP calls" without caring which shape the batcher chose.
 */
import type { TestPdp } from "./pdp.js";

export async function settledDecisionCalls(pdp: TestPdp, quietMs = 200, timeoutMs = 10_000): Promise<number> {
  const read = async () => (await pdp.checkCalls("CheckResources")) + (await pdp.checkCalls("AccessEvaluationBatch"));
  const deadline = Date.now() + timeoutMs;
  let last = await read();
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error(`PDP decision call count still moving after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
    const now = await read();
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
  return last;
}

/** The status of the service's /readyz: 200 once the PDP has answered its health check. */
export async function readyz(adminPort: number): Promise<number> {
  return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status;
}
