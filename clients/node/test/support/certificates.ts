// Certificates and tokens made by the tests, with the `openssl` CLI (OPENSSL, else the one on
// PATH): a self-signed coordinator certificate (what `celeritas dev`'s worker can trust as its own
// root), a CA for client certificates, client certificates it signs, and API tokens with the
// sha256 the coordinator's configuration wants.

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A certificate and its key: paths, and their PEM text. */
export interface KeyPairFiles {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

/** An API token and its hex sha256, as `[auth.tokens.NAME] sha256` takes it. */
export interface TestToken {
  secret: string;
  sha256: string;
}

/** A token shaped like the coordinator's own: `celeritas_` and 43 base64url characters. */
export function makeToken(): TestToken {
  const secret = `celeritas_${randomBytes(32).toString("base64url")}`;
  return { secret, sha256: createHash("sha256").update(secret, "utf8").digest("hex") };
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync(process.env.OPENSSL ?? "openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`openssl ${args[0]} failed: ${(error as Error).message}\n${stderr}`);
  }
}

// One configuration for every certificate, so the system's openssl.cnf adds nothing.
const opensslConfig = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = celeritas test
[server]
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`;

const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A directory of certificates; `dispose()` removes it. */
export class TestCertificates {
  readonly directory = mkdtempSync(join(tmpdir(), "celeritas-node-certs-"));
  private readonly config = join(this.directory, "openssl.cnf");
  private serial = 1;

  constructor() {
    writeFileSync(this.config, opensslConfig);
  }

  private files(name: string): KeyPairFiles {
    const certFile = join(this.directory, `${name}.pem`);
    const keyFile = join(this.directory, `${name}.key`);
    return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
  }

  /** A self-signed certificate for `localhost` and 127.0.0.1, valid for two days. */
  selfSignedServer(name: string): KeyPairFiles {
    openssl(
      ["req", "-x509", ...ecKey, "-config", this.config, "-extensions", "server", "-subj", `/CN=${name}`, "-days", "2",
        "-keyout", `${name}.key`, "-out", `${name}.pem`],
      this.directory,
    );
    return this.files(name);
  }

  /** A certificate authority. */
  authority(name: string): KeyPairFiles {
    openssl(
      ["req", "-x509", ...ecKey, "-config", this.config, "-extensions", "ca", "-subj", `/CN=${name}`, "-days", "2",
        "-keyout", `${name}.key`, "-out", `${name}.pem`],
      this.directory,
    );
    return this.files(name);
  }

  /** A client certificate whose common name is `identity`, signed by `authority`. */
  client(authority: KeyPairFiles, identity: string, name: string): KeyPairFiles {
    openssl(["req", "-new", ...ecKey, "-config", this.config, "-subj", `/CN=${identity}`, "-keyout", `${name}.key`, "-out", `${name}.csr`], this.directory);
    openssl(
      ["x509", "-req", "-in", `${name}.csr`, "-CA", authority.certFile, "-CAkey", authority.keyFile,
        "-set_serial", String(this.serial++), "-days", "2", "-extfile", this.config, "-extensions", "client", "-out", `${name}.pem`],
      this.directory,
    );
    return this.files(name);
  }

  dispose(): void {
    rmSync(this.directory, { recursive: true, force: true });
  }
}
