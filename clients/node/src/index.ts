// The celeritas client for Node. Everything a caller needs is exported from here; the generated
// protobuf code stays internal (its types are not part of the API).

export {
  Client,
  type CancelOptions,
  type CancelTasksOptions,
  type ListTasksOptions,
  type RetryTasksOptions,
  type ClientOptions,
  type GetOptions,
  type HealthOptions,
  type ListRecordsPageOptions,
} from "./client";
export type { TlsOptions } from "./connection";
export {
  CancelledError,
  CeleritasError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  UnimplementedError,
} from "./errors";
export type {
  Inspector,
  KeyRate,
  QueueDepth,
  RateLimitRule,
  RateLimits,
  QueueRef,
  ScheduledWork,
  WorkerPing,
  WorkerQueues,
  WorkerStats,
  WorkerTaskNames,
  WorkerTasks,
} from "./inspect";
export type { StoredFile, UploadOptions } from "./files";
export type { StreamProgressOptions } from "./progress";
export type { Schedule, ScheduleDefinition, ScheduledTask, Schedules } from "./schedules";
export { defaultRetryOptions, type RetryOptions } from "./retry";
export {
  terminalStates,
  type Aggregate,
  type AttemptFailure,
  type BulkResult,
  type HealthStatus,
  type ListRecordsOptions,
  type Progress,
  type ProgressChange,
  type ProgressEvent,
  type RecordPage,
  type SubmitOptions,
  type Submitted,
  type Task,
  type TaskError,
  type TaskRecord,
  type TaskSelector,
  type TaskState,
  type TaskSubmission,
  type TreePause,
} from "./types";
