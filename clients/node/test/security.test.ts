// TLS and tokens against real coordinators: `celeritas dev` serving TLS with a self-signed
// certificate and requiring tokens, and `celeritas coordinator` requiring client certificates.
// The certificates and tokens are made here (test/support/certificates.ts).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { inspect } from "node:util";
import { status } from "@grpc/grpc-js";
import { CeleritasError, Client, PermissionDeniedError, UnauthenticatedError, UnavailableError, type ProgressEvent } from "../src";
import { makeToken, TestCertificates, type KeyPairFiles, type TestToken } from "./support/certificates";
import { DevServer } from "./support/server";

/** Runs `body` with these environment variables set (undefined: unset), then puts them back. */
async function withEnvironment<T>(variables: Record<string, string | undefined>, body: () => T | Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(variables).map((name) => [name, process.env[name]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) {
        delete process.env[name];
      } else {
        process.env[name] = value;
      }
    }
  };
  apply(variables);
  try {
    return await body();
  } finally {
    apply(saved);
  }
}

/** The `[auth]` part of a configuration: tokens by name with their roles. */
function authConfig(tokens: Record<string, { token: TestToken; roles: string[] }>): string {
  const entries = Object.entries(tokens).map(
    ([name, { token, roles }]) => `[auth.tokens.${name}]\nroles = ${JSON.stringify(roles)}\nsha256 = "${token.sha256}"\n`,
  );
  return `[auth]\nrequired = true\n\n${entries.join("\n")}`;
}

/** Fails unless `promise` rejects with a `CeleritasError` of `code`; answers the error. */
async function rejection(promise: Promise<unknown>, code: status): Promise<CeleritasError> {
  let caught: unknown;
  await assert.rejects(promise, (error: unknown) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof CeleritasError, `not a CeleritasError: ${inspect(caught)}`);
  assert.equal(caught.codeName, status[code], caught.message);
  return caught;
}

const noRetries = { maxAttempts: 1 };

describe("TLS and tokens (celeritas dev with [coordinator.tls] and [auth] required)", () => {
  let certificates: TestCertificates;
  let serverCertificate: KeyPairFiles;
  let server: DevServer;
  const web = makeToken();
  const reader = makeToken();

  before(async () => {
    certificates = new TestCertificates();
    serverCertificate = certificates.selfSignedServer("coordinator");
    const config =
      `[coordinator.tls]\ncert_file = ${JSON.stringify(serverCertificate.certFile)}\n` +
      `key_file = ${JSON.stringify(serverCertificate.keyFile)}\n\n` +
      authConfig({ web: { token: web, roles: ["submit", "read"] }, reader: { token: reader, roles: ["read"] } });
    server = await DevServer.start({ files: { "celeritas.toml": config }, https: true });
  });

  after(async () => {
    await server?.dispose();
    certificates?.dispose();
  });

  /** A client of the server that trusts its certificate. */
  function client(token: string | null, extra: { retry?: { maxAttempts: number } } = {}): Client {
    return new Client(server.url, { tls: { ca: serverCertificate.cert }, token, ...extra });
  }

  test("with the CA and a token, a task is submitted and its result waited for over TLS", async () => {
    assert.match(server.url, /^https:\/\//);
    const web_ = client(web.secret);
    try {
      const { taskId, created } = await web_.submit("noop", { over: "tls" });
      assert.equal(created, true);
      const task = await web_.get(taskId, { wait: 30_000 });
      assert.equal(task.state, "succeeded", JSON.stringify(task.error));
      assert.deepEqual(task.result, { over: "tls" });
    } finally {
      web_.close();
    }
  });

  test("a fan-out's progress streams over TLS to its end", async () => {
    const web_ = client(web.secret);
    try {
      const { taskId } = await web_.submit("fan_out", { task: "noop", count: 5 });
      const events: ProgressEvent[] = [];
      for await (const event of web_.streamProgress(taskId)) {
        events.push(event);
      }
      const last = events.at(-1);
      assert.deepEqual(last?.change, { type: "treeFinished", rootState: "succeeded" });
      // The root and its 5 children.
      assert.equal(last?.aggregate.tasksTotal, 6);
      assert.equal(last?.aggregate.tasksFinished, 6);
    } finally {
      web_.close();
    }
  });

  test("the CA, the token and the https URL can come from the environment, as for the CLI", async () => {
    await withEnvironment(
      { CELERITAS_COORDINATOR: server.url, CELERITAS_TLS_CA: serverCertificate.certFile, CELERITAS_TOKEN: web.secret, CELERITAS_TLS_CERT: undefined, CELERITAS_TLS_KEY: undefined },
      async () => {
        const fromEnvironment = new Client();
        try {
          const { taskId } = await fromEnvironment.submit("noop", { from: "environment" });
          assert.deepEqual((await fromEnvironment.get(taskId, { wait: 30_000 })).result, { from: "environment" });
        } finally {
          fromEnvironment.close();
        }
        // `token: null` sends none even with CELERITAS_TOKEN set.
        const tokenless = new Client(undefined, { token: null });
        try {
          await rejection(tokenless.submit("noop"), status.UNAUTHENTICATED);
        } finally {
          tokenless.close();
        }
      },
    );
  });

  test("without a token a call is refused with UnauthenticatedError; health needs none", async () => {
    const anonymous = client(null);
    try {
      // The TLS connection itself is fine: health answers.
      assert.equal(await anonymous.health(), "SERVING");
      const error = await rejection(anonymous.submit("noop"), status.UNAUTHENTICATED);
      assert.ok(error instanceof UnauthenticatedError);
      assert.match(error.details, /needs a token/);
    } finally {
      anonymous.close();
    }
  });

  test("a read-only token may read but not submit: PermissionDeniedError names the submit role", async () => {
    const web_ = client(web.secret);
    const reader_ = client(reader.secret);
    try {
      const { taskId } = await web_.submit("noop", { read: "me" });
      assert.deepEqual((await reader_.get(taskId, { wait: 30_000 })).result, { read: "me" });
      const error = await rejection(reader_.submit("noop"), status.PERMISSION_DENIED);
      assert.ok(error instanceof PermissionDeniedError);
      assert.match(error.details, /SubmitTask needs the submit role/);
      assert.match(error.details, /"reader" has the roles read/);
    } finally {
      web_.close();
      reader_.close();
    }
  });

  test("the token shows in no error and no inspection", async () => {
    const unknown = makeToken();
    const stranger = client(unknown.secret);
    try {
      const error = await rejection(stranger.submit("noop"), status.UNAUTHENTICATED);
      assert.match(error.details, /does not accept the token/);
      const shown = [
        error.message,
        String(error),
        error.stack ?? "",
        inspect(error, { depth: Infinity, showHidden: true }),
        inspect(stranger, { depth: Infinity, showHidden: true }),
        inspect(stranger.schedules, { depth: Infinity, showHidden: true }),
        inspect(stranger.inspect, { depth: Infinity, showHidden: true }),
        JSON.stringify(error),
      ];
      assert.match(shown[4]!, /^Client \{ url: "https:\/\/127\.0\.0\.1:\d+", credentials: "tls", token: "\(set\)" \}$/);
      for (const text of shown) {
        assert.ok(!text.includes(unknown.secret), `the token is in: ${text.slice(0, 200)}`);
      }
    } finally {
      stranger.close();
    }
    // A token that cannot go in a header is refused without being repeated.
    const broken = `${unknown.secret}\nsecond line`;
    assert.throws(
      () => client(broken),
      (error: unknown) => error instanceof TypeError && /^token must be visible ASCII/.test(error.message) && !error.message.includes(unknown.secret),
    );
  });

  test("without the CA (the system's roots) the self-signed certificate is refused", async () => {
    const untrusting = new Client(server.url, { tls: {}, token: web.secret, retry: noRetries });
    try {
      const error = await rejection(untrusting.health(), status.UNAVAILABLE);
      assert.ok(error instanceof UnavailableError);
      assert.match(error.details, /certificate/i);
    } finally {
      untrusting.close();
    }
  });

  test("plain text to the TLS port is not served", async () => {
    const plain = new Client(server.url.replace(/^https:/, "http:"), { token: web.secret, retry: noRetries });
    try {
      await rejection(plain.health(), status.UNAVAILABLE);
    } finally {
      plain.close();
    }
  });
});

describe("TLS settings need an https:// URL", () => {
  let certificates: TestCertificates;
  let pair: KeyPairFiles;

  before(() => {
    certificates = new TestCertificates();
    pair = certificates.selfSignedServer("lonely");
  });

  after(() => certificates?.dispose());

  test("tls options with an http:// or bare host:port URL throw, naming them", () => {
    assert.throws(() => new Client("http://127.0.0.1:50051", { tls: { ca: pair.cert } }), {
      name: "TypeError",
      message: /^tls\.ca: TLS settings need an https:\/\/ coordinator URL, not "http:\/\/127\.0\.0\.1:50051"/,
    });
    assert.throws(() => new Client("127.0.0.1:50051", { tls: { cert: pair.cert, key: pair.key } }), {
      name: "TypeError",
      message: /^tls\.cert, tls\.key: TLS settings need an https:\/\//,
    });
    // With https:// the same options make a client.
    new Client("https://127.0.0.1:50051", { tls: { ca: pair.cert, cert: pair.cert, key: pair.key } }).close();
  });

  test("CELERITAS_TLS_CA with an http:// URL throws, naming the variable", async () => {
    await withEnvironment({ CELERITAS_TLS_CA: pair.certFile, CELERITAS_TLS_CERT: undefined, CELERITAS_TLS_KEY: undefined }, () => {
      assert.throws(() => new Client("http://127.0.0.1:50051"), {
        name: "TypeError",
        message: new RegExp(`^CELERITAS_TLS_CA \\(${pair.certFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\): TLS settings need an https://`),
      });
      // Explicit options replace the environment's: `tls: {}` has none.
      new Client("http://127.0.0.1:50051", { tls: {} }).close();
    });
  });

  test("a path instead of PEM, a certificate without its key, and a key that is not the certificate's are refused", () => {
    assert.throws(() => new Client("https://127.0.0.1:50051", { tls: { ca: pair.certFile } }), {
      name: "TypeError",
      message: /^tls\.ca: not PEM .*not its path/,
    });
    assert.throws(() => new Client("https://127.0.0.1:50051", { tls: { cert: pair.cert } }), {
      name: "TypeError",
      message: /^tls\.cert needs tls\.key/,
    });
    const other = certificates.selfSignedServer("other");
    assert.throws(() => new Client("https://127.0.0.1:50051", { tls: { cert: pair.cert, key: other.key } }), (error: unknown) => {
      assert.ok(error instanceof TypeError);
      assert.match(error.message, /^tls\.cert with tls\.key: cannot be used for TLS: /);
      assert.ok(!error.message.includes(other.key.toString().split("\n")[1]!), "the key's text is not shown");
      return true;
    });
  });
});

describe("client certificates (celeritas coordinator with require_client_cert)", () => {
  let certificates: TestCertificates;
  let serverCertificate: KeyPairFiles;
  let clientCertificate: KeyPairFiles;
  let strangerCertificate: KeyPairFiles;
  let server: DevServer;
  const reader = makeToken();

  before(async () => {
    certificates = new TestCertificates();
    serverCertificate = certificates.selfSignedServer("coordinator");
    const authority = certificates.authority("clients-ca");
    clientCertificate = certificates.client(authority, "node-client", "node-client");
    // Signed by a CA the coordinator does not know.
    strangerCertificate = certificates.client(certificates.authority("other-ca"), "stranger", "stranger");
    const config =
      `[coordinator.tls]\ncert_file = ${JSON.stringify(serverCertificate.certFile)}\n` +
      `key_file = ${JSON.stringify(serverCertificate.keyFile)}\n` +
      `client_ca_file = ${JSON.stringify(authority.certFile)}\nrequire_client_cert = true\n\n` +
      authConfig({ reader: { token: reader, roles: ["read"] } });
    server = await DevServer.start({ command: "coordinator", files: { "celeritas.toml": config }, https: true });
  });

  after(async () => {
    await server?.dispose();
    certificates?.dispose();
  });

  function client(certificate: KeyPairFiles | undefined, token: string | null): Client {
    const tls = { ca: serverCertificate.cert, ...(certificate && { cert: certificate.cert, key: certificate.key }) };
    return new Client(server.url, { tls, token, retry: noRetries });
  }

  test("with a client certificate, calls are served; the certificate alone holds the worker role", async () => {
    const certified = client(clientCertificate, null);
    try {
      assert.equal(await certified.health(), "SERVING");
      // ListTasks is open to workers; inspection needs read, which a certificate does not give.
      assert.ok(Array.isArray(await certified.listTasks()));
      const error = await rejection(certified.inspect.queues(), status.PERMISSION_DENIED);
      assert.match(error.details, /needs the read role; this caller has the roles worker/);
    } finally {
      certified.close();
    }
    const certifiedReader = client(clientCertificate, reader.secret);
    try {
      assert.ok(Array.isArray(await certifiedReader.inspect.queues()));
    } finally {
      certifiedReader.close();
    }
  });

  test("without a client certificate, or with one from another CA, the connection is refused", async () => {
    // The coordinator's TLS alert, as OpenSSL reports it to the client.
    const cases = [
      { certificate: undefined, alert: /certificate required/ },
      { certificate: strangerCertificate, alert: /unknown ca/ },
    ];
    for (const { certificate, alert } of cases) {
      const refused = client(certificate, reader.secret);
      try {
        assert.match((await rejection(refused.health(), status.UNAVAILABLE)).details, alert);
        assert.match((await rejection(refused.inspect.queues(), status.UNAVAILABLE)).details, alert);
      } finally {
        refused.close();
      }
    }
  });
});
