// The one channel a `Client` uses, and how each call goes out on it: the token as metadata, a
// deadline, grpc-js errors turned into `CeleritasError`s, retries on UNAVAILABLE. Also where the
// credentials come from: the options, else the environment (as the celeritas CLI reads it).

import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { credentials, Metadata, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { fromGrpcError } from "./errors";
import { withRetries, type RetryOptions } from "./retry";

/**
 * TLS settings for an `https://` coordinator, as PEM text (a string, or the bytes of a PEM file)
 * the way Node's `tls` takes them: read a file with `readFileSync(path)`.
 */
export interface TlsOptions {
  /** The CA certificate(s) that signed the coordinator's certificate; default: Node's trusted roots. */
  ca?: string | Uint8Array;
  /** A client certificate (chain) to present, such as a worker's identity; needs `key`. */
  cert?: string | Uint8Array;
  /** The client certificate's private key; needs `cert`. */
  key?: string | Uint8Array;
}

/** One PEM setting and where it came from (`tls.ca`, or `CELERITAS_TLS_CA (path)`), for messages. */
interface PemSetting {
  pem: Buffer;
  source: string;
}

/** The TLS settings a client was given, read and checked. */
export interface ResolvedTls {
  ca?: PemSetting;
  cert?: PemSetting;
  key?: PemSetting;
}

const tlsFields = ["ca", "cert", "key"] as const;

const tlsEnvironment: Record<(typeof tlsFields)[number], string> = {
  ca: "CELERITAS_TLS_CA",
  cert: "CELERITAS_TLS_CERT",
  key: "CELERITAS_TLS_KEY",
};

/**
 * The TLS settings: `options` when given (even `{}`, which ignores the environment), else the PEM
 * files named by `CELERITAS_TLS_CA`, `CELERITAS_TLS_CERT` and `CELERITAS_TLS_KEY` (unset or empty:
 * none). Throws a `TypeError` naming the option or variable for text that is not PEM, an unreadable
 * file, or a certificate without its key (or the reverse). No message shows a key or a token.
 */
export function resolveTls(options: TlsOptions | undefined, environment: NodeJS.ProcessEnv = process.env): ResolvedTls {
  const resolved: ResolvedTls = {};
  for (const field of tlsFields) {
    if (options !== undefined) {
      const value = options[field];
      if (value !== undefined) {
        resolved[field] = pemSetting(value, `tls.${field}`);
      }
      continue;
    }
    const variable = tlsEnvironment[field];
    const path = environment[variable];
    if (path === undefined || path === "") {
      continue;
    }
    let contents: Buffer;
    try {
      contents = readFileSync(path);
    } catch (error) {
      throw new TypeError(`${variable}: cannot read ${JSON.stringify(path)}: ${(error as Error).message}`, { cause: error });
    }
    resolved[field] = pemSetting(contents, `${variable} (${path})`);
  }
  if ((resolved.cert === undefined) !== (resolved.key === undefined)) {
    const [given, missing] = resolved.cert !== undefined ? (["cert", "key"] as const) : (["key", "cert"] as const);
    const missingName = options !== undefined ? `tls.${missing}` : tlsEnvironment[missing];
    throw new TypeError(`${resolved[given]!.source} needs ${missingName}: a client certificate and its private key go together`);
  }
  return resolved;
}

function pemSetting(value: unknown, source: string): PemSetting {
  let pem: Buffer;
  if (typeof value === "string") {
    pem = Buffer.from(value, "utf8");
  } else if (value instanceof Uint8Array) {
    pem = Buffer.from(value);
  } else {
    throw new TypeError(`${source}: expected PEM text (a string or a Buffer), not ${value === null ? "null" : typeof value}`);
  }
  // The text itself is never shown: it may be a private key.
  if (!pem.includes("-----BEGIN ")) {
    throw new TypeError(`${source}: not PEM (no "-----BEGIN" line); give the file's contents, such as readFileSync(path), not its path`);
  }
  return { pem, source };
}

/**
 * The token: `token` when given (`null`: none, whatever the environment says), else
 * `CELERITAS_TOKEN` (unset or empty: none). Throws a `TypeError` that does not show it for a token
 * that cannot go in a header (empty, spaces, control or non-ASCII characters).
 */
export function resolveToken(token: string | null | undefined, environment: NodeJS.ProcessEnv = process.env): string | undefined {
  if (token === null) {
    return undefined;
  }
  let source = "token";
  if (token === undefined) {
    const fromEnvironment = environment.CELERITAS_TOKEN;
    if (fromEnvironment === undefined || fromEnvironment === "") {
      return undefined;
    }
    token = fromEnvironment;
    source = "CELERITAS_TOKEN";
  }
  if (typeof token !== "string") {
    throw new TypeError(`${source}: expected a string, not ${typeof token}`);
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    const problem = token === "" ? "is empty (leave it out, or null for no token)" : "must be visible ASCII without spaces or line breaks";
    throw new TypeError(`${source} ${problem}; the token is not shown here`);
  }
  return token;
}

/** Where to connect and with which credentials, from a URL such as `http://127.0.0.1:50051`. */
export interface Endpoint {
  /** The gRPC target, `host:port`. */
  target: string;
  /** Whether the URL is https://. */
  secure: boolean;
  credentials: ChannelCredentials;
}

/**
 * `http://host:port` (or a bare `host:port`) connects in plain text; `https://host:port` with TLS:
 * `tls.ca` as the trusted roots (else the system's), `tls.cert` and `tls.key` as the client
 * certificate. TLS settings with a plain-text URL throw a `TypeError` naming them: they are never
 * dropped to connect in plain text. A missing port is 80 or 443 as the scheme says.
 */
export function endpointFromUrl(url: string, tls: ResolvedTls = {}): Endpoint {
  if (!url.includes("://")) {
    refuseTlsWithoutHttps(url, tls);
    return { target: url, secure: false, credentials: credentials.createInsecure() };
  }
  const parsed = new URL(url);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`unsupported coordinator URL ${JSON.stringify(url)}: use http:// or https://`);
  }
  const secure = parsed.protocol === "https:";
  const port = parsed.port === "" ? (secure ? "443" : "80") : parsed.port;
  const target = `${parsed.hostname}:${port}`;
  if (!secure) {
    refuseTlsWithoutHttps(url, tls);
    return { target, secure, credentials: credentials.createInsecure() };
  }
  return { target, secure, credentials: tlsCredentials(tls) };
}

function refuseTlsWithoutHttps(url: string, tls: ResolvedTls): void {
  const given = tlsFields.flatMap((field) => (tls[field] === undefined ? [] : [tls[field]!.source]));
  if (given.length > 0) {
    throw new TypeError(
      `${given.join(", ")}: TLS settings need an https:// coordinator URL, not ${JSON.stringify(url)} ` +
        "(they are never dropped to connect in plain text)",
    );
  }
}

/** grpc-js TLS credentials, after checking each part with Node's TLS so an error names its option. */
function tlsCredentials(tls: ResolvedTls): ChannelCredentials {
  const { ca, cert, key } = tls;
  if (ca !== undefined) {
    usable(() => createSecureContext({ ca: ca.pem }), ca.source);
  }
  if (cert !== undefined && key !== undefined) {
    usable(() => createSecureContext({ cert: cert.pem, key: key.pem }), `${cert.source} with ${key.source}`);
  }
  return credentials.createSsl(ca?.pem ?? null, key?.pem ?? null, cert?.pem ?? null);
}

function usable(check: () => unknown, source: string): void {
  try {
    check();
  } catch (error) {
    // OpenSSL's messages name the problem, never the key's contents.
    throw new TypeError(`${source}: cannot be used for TLS: ${(error as Error).message}`, { cause: error });
  }
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
  // A private field: `util.inspect` and `JSON.stringify` never show it.
  readonly #token: string | undefined;

  constructor(
    token: string | undefined,
    readonly retry: RetryOptions,
    readonly defaultTimeoutMs: number,
  ) {
    this.#token = token;
  }

  /** Whether calls carry a token. */
  get hasToken(): boolean {
    return this.#token !== undefined;
  }

  /** Fresh metadata for one call: the token as `authorization: Bearer <token>`. */
  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.#token !== undefined) {
      metadata.set("authorization", `Bearer ${this.#token}`);
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
