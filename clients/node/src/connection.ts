// The one channel a `Client` uses, and how each call goes out on it: the token as metadata, a
// deadline, grpc-js errors turned into `CeleritasError`s, retries on UNAVAILABLE.

import { credentials, Metadata, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { fromGrpcError } from "./errors";
import { withRetries, type RetryOptions } from "./retry";

/** Where to connect and with which credentials, from a URL such as `http://127.0.0.1:50051`. */
export interface Endpoint {
  /** The gRPC target, `host:port`. */
  target: string;
  credentials: ChannelCredentials;
}

/**
 * `http://host:port` (or a bare `host:port`) connects in plain text; `https://host:port` with TLS
 * and the system's trusted roots. A missing port is 80 or 443 as the scheme says.
 */
export function endpointFromUrl(url: string): Endpoint {
  if (!url.includes("://")) {
    return { target: url, credentials: credentials.createInsecure() };
  }
  const parsed = new URL(url);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`unsupported coordinator URL ${JSON.stringify(url)}: use http:// or https://`);
  }
  const secure = parsed.protocol === "https:";
  const port = parsed.port === "" ? (secure ? "443" : "80") : parsed.port;
  return {
    target: `${parsed.hostname}:${port}`,
    credentials: secure ? credentials.createSsl() : credentials.createInsecure(),
  };
}

/** A grpc-js unary method bound to its client, in its (request, metadata, options, callback) form. */
export type UnaryMethod<Request, Response> = (
  request: Request,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Response) => void,
) => ClientUnaryCall;

/** What every call of one client shares. */
export class CallContext {
  constructor(
    private readonly token: string | undefined,
    readonly retry: RetryOptions,
    readonly defaultTimeoutMs: number,
  ) {}

  /** Fresh metadata for one call: the token as `authorization: Bearer <token>`. */
  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }

  /** Calls a unary method once, with a deadline of `timeoutMs` (default: the client's). */
  callOnce<Request, Response>(method: UnaryMethod<Request, Response>, request: Request, timeoutMs?: number): Promise<Response> {
    const deadline = new Date(Date.now() + (timeoutMs ?? this.defaultTimeoutMs));
    return new Promise((resolve, reject) => {
      method(request, this.metadata(), { deadline }, (error, response) => {
        if (error) {
          reject(fromGrpcError(error));
        } else {
          resolve(response);
        }
      });
    });
  }

  /** Calls a unary method, trying again on UNAVAILABLE. Only for calls that are safe to repeat. */
  call<Request, Response>(method: UnaryMethod<Request, Response>, request: Request, timeoutMs?: number): Promise<Response> {
    return withRetries(this.retry, () => this.callOnce(method, request, timeoutMs));
  }
}
