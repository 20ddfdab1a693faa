// Errors the client throws. Every failed call becomes a `CeleritasError` subclass chosen by its gRPC
// status code, carrying the code and the server's message, so callers can `instanceof` the cases
// they handle (a bad argument, a missing task, an unreachable coordinator) and log the rest.

import { Metadata, status, type ServiceError } from "@grpc/grpc-js";

/** A failed call to celeritas: the gRPC status code and the server's message. */
export class CeleritasError extends Error {
  /** The gRPC status code, as a number (`@grpc/grpc-js`'s `status` enum). */
  readonly code: status;
  /** The code's name, such as "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The server's message, unchanged. For bad input it starts with the field: `task.queue: …`. */
  readonly details: string;
  /** The response trailers, when the server sent any. */
  readonly metadata: Metadata;

  constructor(code: status, details: string, metadata: Metadata = new Metadata(), options?: ErrorOptions) {
    super(details === "" ? codeName(code) : details, options);
    this.name = new.target.name;
    this.code = code;
    this.codeName = codeName(code);
    this.details = details;
    this.metadata = metadata;
  }
}

/** INVALID_ARGUMENT: the request does not validate. `field` names the offending field. */
export class InvalidArgumentError extends CeleritasError {
  /** The field the server named at the start of its message (`tasks[2].queue`), if any. */
  get field(): string | undefined {
    return fieldOf(this.details);
  }
}

/** NOT_FOUND: no such task (or other entity, as the message says). */
export class NotFoundError extends CeleritasError {}

/** FAILED_PRECONDITION: the request is valid but not in this state, such as a child task's progress stream. */
export class FailedPreconditionError extends CeleritasError {}

/** UNAVAILABLE: the coordinator could not be reached or could not durably accept the request. */
export class UnavailableError extends CeleritasError {}

/** DEADLINE_EXCEEDED: the call's deadline passed before the answer came. */
export class DeadlineExceededError extends CeleritasError {}

/** UNAUTHENTICATED: the token is missing or not accepted. */
export class UnauthenticatedError extends CeleritasError {}

/** PERMISSION_DENIED: the token may not do this. */
export class PermissionDeniedError extends CeleritasError {}

/** UNIMPLEMENTED: the coordinator does not serve this method (an older server). */
export class UnimplementedError extends CeleritasError {}

/** CANCELLED: the call was cancelled, usually by this client. */
export class CancelledError extends CeleritasError {}

/** INTERNAL: the server failed; its log has the cause. */
export class InternalError extends CeleritasError {}

type ErrorClass = new (code: status, details: string, metadata?: Metadata, options?: ErrorOptions) => CeleritasError;

const classByCode: ReadonlyMap<status, ErrorClass> = new Map<status, ErrorClass>([
  [status.INVALID_ARGUMENT, InvalidArgumentError],
  [status.NOT_FOUND, NotFoundError],
  [status.FAILED_PRECONDITION, FailedPreconditionError],
  [status.UNAVAILABLE, UnavailableError],
  [status.DEADLINE_EXCEEDED, DeadlineExceededError],
  [status.UNAUTHENTICATED, UnauthenticatedError],
  [status.PERMISSION_DENIED, PermissionDeniedError],
  [status.UNIMPLEMENTED, UnimplementedError],
  [status.CANCELLED, CancelledError],
  [status.INTERNAL, InternalError],
]);

/** Builds the `CeleritasError` subclass for a status code. */
export function errorForStatus(code: status, details: string, metadata?: Metadata, cause?: unknown): CeleritasError {
  const ErrorClassForCode = classByCode.get(code) ?? CeleritasError;
  return new ErrorClassForCode(code, details, metadata, cause === undefined ? undefined : { cause });
}

/** Turns whatever a grpc-js call failed with into a `CeleritasError`; anything else is returned unchanged. */
export function fromGrpcError(error: unknown): unknown {
  if (error instanceof CeleritasError || !isServiceError(error)) {
    return error;
  }
  return errorForStatus(error.code, error.details, error.metadata, error);
}

function isServiceError(error: unknown): error is ServiceError {
  return (
    error instanceof Error &&
    typeof (error as Partial<ServiceError>).code === "number" &&
    typeof (error as Partial<ServiceError>).details === "string"
  );
}

function codeName(code: status): string {
  return status[code] ?? `CODE_${code}`;
}

// The server starts an INVALID_ARGUMENT message with the offending field's path and a colon:
// `task.queue: unknown queue "mail"`, `tasks[2].name: is required`.
const fieldPrefix = /^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[A-Za-z_][\w]*(?:\[\d+\])?)*): /;

function fieldOf(details: string): string | undefined {
  return fieldPrefix.exec(details)?.[1];
}
