/**
 * Logs: pino JSON lines on stdout (SPEC §9). Decision records carry only the fields below —
 * never tokens, cookies or Authorization — and pino's JSON escaping keeps a forged CR/LF in a
 * request-derived value inside one record.
 */
import { pino, type Logger } from "pino";
import type { Config } from "./config/schema.js";
import type { Verdict } from "./decision/decide.js";

export type { Logger };

export function createLogger(level: Config["log"]["level"], destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { service: "cerbos-forwardauth" }, timestamp: pino.stdTimeFunctions.isoTime },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A decision-log writer per `log.decisions` (none | deny | all); undefined when nothing is logged. */
export function decisionLogger(logger: Logger, mode: Config["log"]["decisions"]): ((r: Verdict, requestId: string, durationMs: number) => void) | undefined {
  if (mode === "none") return undefined;
  const all = mode === "all";
  return (r, requestId, durationMs) => {
    if (!all && r.outcome === "allow") return;
    logger.info(
      {
        decision: true,
        requestId,
        route: r.route,
        principal: r.check?.principal.id ?? null,
        resourceKind: r.check?.resource.kind ?? null,
        resourceId: r.check?.resource.id ?? null,
        action: r.check?.action ?? null,
        outcome: r.outcome,
        status: r.status,
        durationMs: Math.round(durationMs * 1000) / 1000,
        cerbosCallId: r.callId ?? null,
        ...(r.refusal && r.refusal.code !== "forbidden" ? { reason: r.refusal.message } : {}),
      },
      "decision",
    );
  };
}
