/**
 * A PDP without AuthZEN, on the wire: a grpc-js server on a private unix socket that serves only
 * `cerbos.svc.v1.CerbosService/CheckResources` and `grpc.health.v1.Health/Check` (what the pool's
 * health check calls), each as a byte passthrough to the real PDP. Every decision still comes from
 * the real PDP; any other method — `authzen.authorization.v1.AuthorizationService/*` included —
 * gets grpc-js's own UNIMPLEMENTED.
 *
 *   const pass = await startGrpcPassthrough(pdp.grpcTarget);
 *   startService(pass.target, …);
 *   afterAll(() => pass.close());
 *
 * With `{ authzen: true }` it also serves AccessEvaluationBatch. Any served method can be made to
 * answer a gRPC status of one's choice instead of forwarding — `answerWith(ACCESS_EVALUATION_BATCH,
 * "UNIMPLEMENTED")`: an AuthZEN service that goes away while the service runs;
 * `answerWith(HEALTH_CHECK, "UNAVAILABLE")`: a PDP that looks down — and `answerWith(path,
 * undefined)` forwards again.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Client,
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

export const CHECK_RESOURCES = "/cerbos.svc.v1.CerbosService/CheckResources";
export const HEALTH_CHECK = "/grpc.health.v1.Health/Check";
export const ACCESS_EVALUATION_BATCH = "/authzen.authorization.v1.AuthorizationService/AccessEvaluationBatch";

export type StatusName = keyof typeof GrpcStatus;

export interface GrpcPassthroughOptions {
  /** Also serve (forward) AccessEvaluationBatch. Default false: not registered at all. */
  authzen?: boolean;
}

export interface GrpcPassthrough {
  /** `unix:/…/pass.sock`: a gRPC target for the service. */
  readonly target: string;
  /** Calls the passthrough received per registered method path (UNIMPLEMENTED ones are not counted). */
  calls(path: string): number;
  /** From now on answer `path` (a served method) with this gRPC status; undefined: forward again. */
  answerWith(path: string, code: StatusName | undefined): void;
  /** Stops the server (cutting its connections) and the upstream client; removes the socket dir. */
  close(): Promise<void>;
}

const identity = (b: Buffer): Buffer => b;

export async function startGrpcPassthrough(upstreamTarget: string, opts: GrpcPassthroughOptions = {}): Promise<GrpcPassthrough> {
  const dir = await mkdtemp(join(tmpdir(), "grpc-pass-"));
  const target = `unix:${join(dir, "pass.sock")}`;
  // A short reconnect backoff, so the passthrough finds a restarted PDP as fast as the pool does.
  const upstream = new Client(upstreamTarget, credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
  });
  const counts = new Map<string, number>();
  const answers = new Map<string, StatusName>();

  const forward = (path: string) => (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const answer = answers.get(path);
    if (answer !== undefined) {
      callback({ code: GrpcStatus[answer], details: `passthrough: ${path} answers ${answer}` });
      return;
    }
    upstream.makeUnaryRequest(path, identity, identity, call.request, new Metadata(), { deadline: call.getDeadline() }, (error: ServiceError | null, response?: Buffer) => {
      if (error) callback({ code: error.code, details: error.details, metadata: error.metadata });
      else callback(null, response);
    });
  };

  const paths = [CHECK_RESOURCES, HEALTH_CHECK, ...(opts.authzen ? [ACCESS_EVALUATION_BATCH] : [])];
  const definition: Record<string, ServiceDefinition[string]> = {};
  const implementation: UntypedServiceImplementation = {};
  for (const path of paths) {
    const name = path.slice(path.lastIndexOf("/") + 1);
    definition[name] = {
      path,
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    };
    implementation[name] = forward(path);
  }

  const server = new Server();
  server.addService(definition as ServiceDefinition, implementation);
  try {
    await new Promise<void>((resolve, reject) => server.bindAsync(target, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  } catch (error) {
    server.forceShutdown();
    upstream.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }

  let closed: Promise<void> | undefined;
  return {
    target,
    calls: (path) => counts.get(path) ?? 0,
    answerWith(path, code) {
      if (!paths.includes(path)) throw new Error(`${path} is not served here (unregistered methods always answer UNIMPLEMENTED)`);
      if (code === undefined) answers.delete(path);
      else answers.set(path, code);
    },
    close() {
      closed ??= (async () => {
        server.forceShutdown();
        upstream.close();
        await rm(dir, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
