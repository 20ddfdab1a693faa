// Watching what a client sends and how its calls end, through a grpc-js interceptor: the calls
// still go to the real server.

import { InterceptingCall, type Interceptor, type Metadata, type StatusObject } from "@grpc/grpc-js";

/** One call as the client made it. */
export interface RecordedCall {
  /** The method's path, such as "/celeritas.v1.TaskService/SubmitTask". */
  path: string;
  /** The metadata it was sent with. */
  metadata: Metadata;
  /** How it ended; resolves when grpc-js reports its status (a cancelled call's comes a moment later). */
  ended: Promise<StatusObject>;
}

/** An interceptor that records every call of the client it is given to. */
export function recordCalls(): { interceptor: Interceptor; calls: RecordedCall[] } {
  const calls: RecordedCall[] = [];
  const interceptor: Interceptor = (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, _listener, next) {
        let end: (status: StatusObject) => void = () => {};
        const ended = new Promise<StatusObject>((resolve) => (end = resolve));
        calls.push({ path: options.method_definition.path, metadata: metadata.clone(), ended });
        // A partial listener: grpc-js passes what it leaves out through unchanged.
        next(metadata, {
          onReceiveStatus(status, nextStatus) {
            end(status);
            nextStatus(status);
          },
        });
      },
    });
  return { interceptor, calls };
}
