// ts-mls peer for the crdt-mls interop tests (docs/interop.md).
//
// One long-lived process speaks JSON lines over stdin/stdout: each request is
// {"id": n, "op": "...", ...args}, each answer {"id": n, "ok": true, "result": {...}} or
// {"id": n, "ok": false, "error": "..."}.  Bytes travel as lowercase hex; every MLS value
// crossing the pipe is an RFC 9420 MLSMessage (or a TLS-encoded ratchet tree), so the
// Python side only ever sees wire bytes.  Several clients live in one process, keyed by name.
import { createInterface } from "node:readline";
import {
  acceptAll,
  createApplicationMessage,
  createCommit,
  createGroup,
  createGroupInfoWithExternalPubAndRatchetTree,
  createProposal,
  decodeMlsMessage,
  defaultCapabilities,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  getCiphersuiteImpl,
  joinGroup,
  joinGroupExternal,
  makePskIndex,
  mlsExporter,
  branchGroup,
  joinGroupFromBranch,
  joinGroupFromReinit,
  reinitCreateNewGroup,
  reinitGroup,
  proposeAddExternal,
  proposeExternal,
  processPrivateMessage,
  processPublicMessage,
} from "ts-mls";
import { getCiphersuiteFromId, getCiphersuiteNameFromId } from "ts-mls/crypto/ciphersuite.js";
import { createGroupInfo } from "ts-mls/createCommit.js";
import { decodeRatchetTree, encodeRatchetTree } from "ts-mls/ratchetTree.js";
import { p256, p384, p521 } from "@noble/curves/nist.js";

const clients = new Map(); // name -> { impl, kp?, state? }
const impls = new Map(); // suite id -> CiphersuiteImpl

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const text = (s) => new TextEncoder().encode(s);

async function impl(suite) {
  if (!impls.has(suite)) impls.set(suite, await getCiphersuiteImpl(getCiphersuiteFromId(suite)));
  return impls.get(suite);
}

function client(name) {
  const c = clients.get(name);
  if (!c) throw new Error(`unknown client ${name}`);
  return c;
}

// external PSKs a client knows (RFC 9420 section 8.4), keyed as ts-mls's makePskIndex expects
function pskIndex(c) {
  return makePskIndex(c.state, c.psks ?? {});
}

function pskId(spec) {
  const nonce = unhex(spec.nonce);
  if (spec.kind === "external") return { psktype: "external", pskId: unhex(spec.id), pskNonce: nonce };
  return {
    psktype: "resumption",
    usage: "application",
    pskGroupId: unhex(spec.group_id),
    pskEpoch: BigInt(spec.epoch),
    pskNonce: nonce,
  };
}

function member(name) {
  const c = client(name);
  if (!c.state) throw new Error(`client ${name} is not in a group`);
  return c;
}

function decode(h, wireformat) {
  const bytes = unhex(h);
  const res = decodeMlsMessage(bytes, 0);
  if (!res) throw new Error("ts-mls cannot decode the MLSMessage");
  const [msg, used] = res;
  if (used !== bytes.length) throw new Error(`trailing bytes after MLSMessage (${bytes.length - used})`);
  if (wireformat && msg.wireformat !== wireformat) throw new Error(`expected ${wireformat}, got ${msg.wireformat}`);
  return msg;
}

const encode = (msg) => hex(encodeMlsMessage({ version: "mls10", ...msg }));

function treeHex(state) {
  return hex(encodeRatchetTree(state.ratchetTree));
}

// RFC 9420 section 17.3 extension types ts-mls knows by name
const extensionNames = { 1: "application_id", 2: "ratchet_tree", 3: "required_capabilities", 4: "external_pub", 5: "external_senders" };

function getOwnSignatureKey(c) {
  const node = c.state.ratchetTree[2 * c.state.privatePath.leafIndex];
  return node.leaf.signaturePublicKey;
}

function summary(c) {
  const s = c.state;
  return {
    epoch: Number(s.groupContext.epoch),
    epoch_authenticator: hex(s.keySchedule.epochAuthenticator),
    tree_hash: hex(s.groupContext.treeHash),
    confirmed_transcript_hash: hex(s.groupContext.confirmedTranscriptHash),
    own_leaf: s.privatePath.leafIndex,
    members: s.ratchetTree
      .map((n, i) => (n && n.nodeType === "leaf" ? [i / 2, Buffer.from(n.leaf.credential.identity ?? []).toString()] : null))
      .filter((x) => x !== null),
  };
}

function commitResult(c, res) {
  c.state = res.newState;
  return {
    commit: encode(res.commit),
    welcome: res.welcome ? encode({ wireformat: "mls_welcome", welcome: res.welcome }) : null,
    ratchet_tree: treeHex(c.state),
    ...summary(c),
  };
}

// ts-mls 1.6.4 generates ECDSA signature keys with noble's default, a COMPRESSED point; RFC 9420
// section 5.1.1 requires the UncompressedPointRepresentation.  Unless asked for the raw ts-mls
// behaviour, the peer re-encodes the public key uncompressed (same key pair) before building the
// KeyPackage.  docs/interop.md records this deviation.
const nistCurves = { 2: p256, 5: p521, 7: p384 };

async function signatureKeyPair(suite, cs, compressed) {
  const pair = await cs.signature.keygen();
  const curve = nistCurves[suite];
  if (!curve || compressed) return pair;
  return { signKey: pair.signKey, publicKey: curve.Point.fromBytes(pair.publicKey).toBytes(false) };
}

// ts-mls 1.6.4 puts the bare HPKE public key in the external_pub GroupInfo extension; RFC 9420
// section 12.4.3.2 defines extension_data as the struct ExternalPub { HPKEPublicKey external_pub; }
// whose only field is an opaque<V>, i.e. a varint length prefix then the key.  Unless asked for the
// raw ts-mls behaviour, the peer re-signs its GroupInfo in the RFC form; for the other direction
// the caller must supply a GroupInfo with the bare key (ts-mls verifies the signature over it).  docs/interop.md records this deviation.
function varint(n) {
  if (n < 0x40) return Uint8Array.of(n);
  if (n < 0x4000) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

function mapExternalPub(groupInfo, f) {
  const extensions = groupInfo.extensions.map((e) =>
    e.extensionType === "external_pub" ? { ...e, extensionData: f(e.extensionData) } : e,
  );
  return { ...groupInfo, extensions };
}

async function resignWithRfcExternalPub(c, gi) {
  const rfc = mapExternalPub(gi, (k) => new Uint8Array([...varint(k.length), ...k]));
  return createGroupInfo(gi.groupContext, gi.confirmationTag, c.state, rfc.extensions, c.impl);
}

const ops = {
  async key_package({ client: name, suite, identity, compressed_signature_key = false }) {
    const cs = await impl(suite);
    const cred = { credentialType: "basic", identity: text(identity) };
    const pair = await signatureKeyPair(suite, cs, compressed_signature_key);
    const kp = await generateKeyPackageWithKey(cred, defaultCapabilities(), defaultLifetime, [], pair, cs);
    clients.set(name, { impl: cs, kp });
    return { key_package: encode({ wireformat: "mls_key_package", keyPackage: kp.publicPackage }) };
  },

  async create_group({ client: name, suite, identity, group_id }) {
    await ops.key_package({ client: name, suite, identity });
    const c = client(name);
    c.state = await createGroup(unhex(group_id), c.kp.publicPackage, c.kp.privatePackage, [], c.impl);
    return summary(c);
  },

  async commit({
    client: name,
    add = [],
    remove = [],
    psk = [],
    group_context_extensions,
    ratchet_tree_extension = false,
    public_message = false,
  }) {
    const c = member(name);
    const proposals = [
      ...add.map((k) => ({ proposalType: "add", add: { keyPackage: decode(k, "mls_key_package").keyPackage } })),
      ...remove.map((i) => ({ proposalType: "remove", remove: { removed: i } })),
      ...psk.map((p) => ({ proposalType: "psk", psk: { preSharedKeyId: pskId(p) } })),
    ];
    if (group_context_extensions) {
      const extensions = group_context_extensions.map((e) => ({
        extensionType: extensionNames[e.type] ?? e.type,
        extensionData: unhex(e.data),
      }));
      proposals.push({ proposalType: "group_context_extensions", groupContextExtensions: { extensions } });
    }
    const res = await createCommit(
      { state: c.state, cipherSuite: c.impl, pskIndex: pskIndex(c) },
      { extraProposals: proposals, ratchetTreeExtension: ratchet_tree_extension, wireAsPublicMessage: public_message },
    );
    return commitResult(c, res);
  },

  async propose({ client: name, kind, key_package, removed, psk, public_message = false }) {
    const c = member(name);
    let proposal;
    if (kind === "add") proposal = { proposalType: "add", add: { keyPackage: decode(key_package, "mls_key_package").keyPackage } };
    else if (kind === "remove") proposal = { proposalType: "remove", remove: { removed } };
    else if (kind === "psk") proposal = { proposalType: "psk", psk: { preSharedKeyId: pskId(psk) } };
    else throw new Error(`unsupported proposal kind ${kind}`);
    const res = await createProposal(c.state, public_message, proposal, c.impl);
    c.state = res.newState;
    return { message: encode(res.message) };
  },

  async join({ client: name, welcome, ratchet_tree }) {
    const c = client(name);
    if (!c.kp) throw new Error(`client ${name} has no key package`);
    const tree = ratchet_tree ? decodeRatchetTree(unhex(ratchet_tree), 0)?.[0] : undefined;
    if (ratchet_tree && !tree) throw new Error("ts-mls cannot decode the ratchet tree");
    const w = decode(welcome, "mls_welcome").welcome;
    const psks = makePskIndex(undefined, c.psks ?? {});
    c.state = await joinGroup(w, c.kp.publicPackage, c.kp.privatePackage, psks, c.impl, tree);
    return summary(c);
  },

  async group_info({ client: name, raw_external_pub = false }) {
    // the signature covers the extensions, so the RFC form must be re-signed: ts-mls's
    // createGroupInfo signs whatever extension list it is given, the external_pub included
    const c = member(name);
    let gi = await createGroupInfoWithExternalPubAndRatchetTree(c.state, [], c.impl);
    if (!raw_external_pub) gi = await resignWithRfcExternalPub(c, gi);
    return { group_info: encode({ wireformat: "mls_group_info", groupInfo: gi }) };
  },

  async join_external({ client: name, suite, identity, group_info, resync_from }) {
    // ts-mls verifies the GroupInfo signature, so the peer cannot convert an RFC-form
    // external_pub here: the caller passes a GroupInfo in the ts-mls form (bare key).
    // resync_from: rejoin in place of that (old) client, same signature key, removing its leaf
    const cs = await impl(suite);
    let kp;
    if (resync_from) {
      const old = member(resync_from);
      const pair = { signKey: old.state.signaturePrivateKey, publicKey: getOwnSignatureKey(old) };
      const cred = { credentialType: "basic", identity: text(identity) };
      kp = await generateKeyPackageWithKey(cred, defaultCapabilities(), defaultLifetime, [], pair, cs);
    } else {
      await ops.key_package({ client: name, suite, identity });
      kp = client(name).kp;
    }
    const c = { impl: cs, kp };
    clients.set(name, c);
    const gi = decode(group_info, "mls_group_info").groupInfo;
    const res = await joinGroupExternal(gi, kp.publicPackage, kp.privatePackage, Boolean(resync_from), cs);
    c.state = res.newState;
    return { commit: encode({ wireformat: "mls_public_message", publicMessage: res.publicMessage }), ...summary(c) };
  },

  async process({ client: name, message }) {
    const c = member(name);
    const msg = decode(message);
    if (msg.wireformat !== "mls_private_message" && msg.wireformat !== "mls_public_message")
      throw new Error(`cannot process a ${msg.wireformat}`);
    // ts-mls 1.6.4's processMessage hands emptyPskIndex to processPrivateMessage (ignoring the
    // caller's index), so a PSK proposal in a private commit cannot be resolved; call the
    // wire-format specific functions directly (docs/interop.md)
    const res =
      msg.wireformat === "mls_private_message"
        ? await processPrivateMessage(c.state, msg.privateMessage, pskIndex(c), c.impl, acceptAll)
        : { kind: "newState", ...(await processPublicMessage(c.state, msg.publicMessage, pskIndex(c), c.impl, acceptAll)) };
    c.state = res.newState;
    if (res.kind === "applicationMessage") return { kind: "application", data: hex(res.message), ...summary(c) };
    return { kind: "handshake", action: res.actionTaken, active: c.state.groupActiveState.kind, ...summary(c) };
  },

  async protect({ client: name, data, authenticated_data = "" }) {
    const c = member(name);
    const res = await createApplicationMessage(c.state, unhex(data), c.impl, unhex(authenticated_data));
    c.state = res.newState;
    return { message: encode({ wireformat: "mls_private_message", privateMessage: res.privateMessage }) };
  },

  async propose_add_external({ client: name, suite, identity, group_info }) {
    // a non-member asks to be added: Add of its own KeyPackage, sender new_member_proposal (12.1.8)
    await ops.key_package({ client: name, suite, identity });
    const c = client(name);
    const gi = decode(group_info, "mls_group_info").groupInfo;
    const msg = await proposeAddExternal(gi, c.kp.publicPackage, c.kp.privatePackage, c.impl);
    return { message: encode(msg) };
  },

  async external_sender_keys({ client: name, suite }) {
    // a signature key pair for an external sender (RFC 9420 section 12.1.8.1)
    const cs = await impl(suite);
    const pair = await signatureKeyPair(suite, cs, false);
    clients.set(name, { impl: cs, sender: pair });
    return { signature_key: hex(pair.publicKey) };
  },

  async propose_external({ client: name, group_info, removed }) {
    const c = client(name);
    if (!c.sender) throw new Error(`client ${name} is not an external sender`);
    const gi = decode(group_info, "mls_group_info").groupInfo;
    const proposal = { proposalType: "remove", remove: { removed } };
    const msg = await proposeExternal(gi, proposal, c.sender.publicKey, c.sender.signKey, c.impl);
    return { message: encode(msg) };
  },

  // ---- reinit and branch (RFC 9420 sections 11.2, 11.3); the new group lives under new_client

  async branch({ client: name, new_client, identity, key_packages = [], group_id }) {
    const old = member(name);
    const kp = await generateKeyPackageWithKey(
      { credentialType: "basic", identity: text(identity) },
      defaultCapabilities(),
      defaultLifetime,
      [],
      { signKey: old.state.signaturePrivateKey, publicKey: getOwnSignatureKey(old) },
      old.impl,
    );
    const kps = key_packages.map((k) => decode(k, "mls_key_package").keyPackage);
    const res = await branchGroup(old.state, kp.publicPackage, kp.privatePackage, kps, unhex(group_id), old.impl);
    const c = { impl: old.impl, kp, state: res.newState };
    clients.set(new_client, c);
    return commitResult(c, res);
  },

  async reinit({ client: name, group_id, suite }) {
    const c = member(name);
    const res = await reinitGroup(c.state, unhex(group_id), "mls10", getCiphersuiteNameFromId(suite), [], c.impl);
    return commitResult(c, res);
  },

  async reinit_create({ client: name, new_client, identity, key_packages = [], group_id, suite }) {
    const old = client(name);
    await ops.key_package({ client: new_client, suite, identity });
    const c = client(new_client);
    const kps = key_packages.map((k) => decode(k, "mls_key_package").keyPackage);
    const res = await reinitCreateNewGroup(
      old.state,
      c.kp.publicPackage,
      c.kp.privatePackage,
      kps,
      unhex(group_id),
      getCiphersuiteNameFromId(suite),
      [],
    );
    return commitResult(c, res);
  },

  async join_linked({ client: name, old_client, welcome, ratchet_tree, kind }) {
    const c = client(name);
    const old = client(old_client);
    const tree = ratchet_tree ? decodeRatchetTree(unhex(ratchet_tree), 0)?.[0] : undefined;
    const w = decode(welcome, "mls_welcome").welcome;
    c.state =
      kind === "branch"
        ? await joinGroupFromBranch(old.state, w, c.kp.publicPackage, c.kp.privatePackage, tree, c.impl)
        : await joinGroupFromReinit(old.state, w, c.kp.publicPackage, c.kp.privatePackage, tree);
    return summary(c);
  },

  async add_external_psk({ client: name, psk_id, psk }) {
    const c = client(name);
    c.psks = { ...(c.psks ?? {}), [Buffer.from(unhex(psk_id)).toString("base64")]: unhex(psk) };
    return {};
  },

  async export_secret({ client: name, label, context, length }) {
    const c = member(name);
    const secret = await mlsExporter(c.state.keySchedule.exporterSecret, label, unhex(context), length, c.impl);
    return { secret: hex(secret) };
  },

  async state({ client: name }) {
    const c = member(name);
    return { ...summary(c), ratchet_tree: treeHex(c.state) };
  },
};

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
let queue = Promise.resolve();
rl.on("line", (line) => {
  // requests are handled strictly in order (each may be async)
  queue = queue.then(async () => {
    let id = null;
    try {
      const req = JSON.parse(line);
      id = req.id ?? null;
      const op = ops[req.op];
      if (!op) throw new Error(`unknown op ${req.op}`);
      const result = await op(req);
      process.stdout.write(JSON.stringify({ id, ok: true, result }) + "\n");
    } catch (e) {
      const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      process.stdout.write(JSON.stringify({ id, ok: false, error }) + "\n");
    }
  });
});
rl.on("close", () => {
  queue.then(() => process.exit(0));
});
process.stdout.write(JSON.stringify({ id: null, ok: true, result: { ready: true, node: process.version } }) + "\n");
