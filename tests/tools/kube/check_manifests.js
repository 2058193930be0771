#!/usr/bin/env node
// Type-checks Kubernetes manifests offline.
//
//   node check_manifests.js [--crds DIR] [-q] [FILE ...]      (no FILE, or "-": standard input)
//
// Every YAML document of every input is checked:
// - a built-in kind (apps/v1 Deployment, v1 Service, ...) with the model class of its apiVersion/kind
//   from kubernetes-models (the Kubernetes OpenAPI schemas, compiled with ajv);
// - a CustomResourceDefinition also for the rules of structural schemas that the API server enforces
//   (every node typed, value validations without types or descriptions, list-type sets of scalars);
// - a custom resource whose group has a CRD in --crds DIR (default helm/remora/crds) against that
//   CRD's openAPIV3Schema with ajv, fields the schema does not name being errors (as kubectl's
//   strict field validation reports them);
// - anything else (a kind no model or CRD knows) is an error.
// Prints one line per error (`FILE[#N] Kind/name: /path message`) on stderr and a summary on stdout;
// exits 0 when every document passes, 1 when one does not, 2 for unreadable input or usage errors.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");

const MODELS = path.join(__dirname, "node_modules", "kubernetes-models");
const DEFAULT_CRDS = path.resolve(__dirname, "../../../helm/remora/crds");

function usage(msg) {
  if (msg) console.error(`check_manifests: ${msg}`);
  console.error("usage: node check_manifests.js [--crds DIR] [-q] [FILE ...]");
  process.exit(2);
}

// ------------------------------------------------------------------------------------------ inputs

function readDocs(name, text) {
  const docs = [];
  const parsed = YAML.parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  let n = 0;
  for (const d of parsed) {
    n++;
    if (d.errors.length) {
      throw new Error(`${name}#${n}: ${d.errors.map((e) => e.message).join("; ")}`);
    }
    const obj = d.toJS({ maxAliasCount: 100 });
    if (obj === null || obj === undefined) continue; // an empty document (a trailing ---, comments only)
    docs.push({ where: `${name}#${n}`, obj });
  }
  return docs;
}

// ------------------------------------------------------------------------------- built-in kinds

const modelCache = new Map();
async function modelClass(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (modelCache.has(key)) return modelCache.get(key);
  let cls = null;
  if (/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) && /^[A-Za-z0-9]+$/.test(kind)) {
    const file = path.join(MODELS, apiVersion, `${kind}.js`);
    if (fs.existsSync(file)) {
      const mod = await import(file);
      cls = mod[kind] || null;
    }
  }
  modelCache.set(key, cls);
  return cls;
}

function ajvErrors(errors) {
  return (errors || []).map((e) => {
    let m = `${e.instancePath || "/"} ${e.message}`;
    if (e.keyword === "additionalProperties") m = `${e.instancePath || "/"} unknown field "${e.params.additionalProperty}"`;
    if (e.keyword === "enum") m += ` (${e.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")})`;
    return m;
  });
}

// ------------------------------------------------------------------------- structural schemas

// The API server's structural-schema rules (apiextensions validation), the ones a hand-written schema
// most often breaks.
function structuralErrors(schema, at, inJunctor, out) {
  if (schema === null || typeof schema !== "object") {
    out.push(`${at}: a schema must be a mapping`);
    return;
  }
  const open = schema["x-kubernetes-preserve-unknown-fields"] === true || schema["x-kubernetes-int-or-string"] === true;
  if (inJunctor) {
    for (const k of ["type", "description", "default", "additionalProperties", "nullable"]) {
      if (k in schema) out.push(`${at}: "${k}" is not allowed inside allOf/anyOf/oneOf/not`);
    }
  } else if (!schema.type && !open) {
    out.push(`${at}: no type (every field and item needs one, unless x-kubernetes-preserve-unknown-fields)`);
  }
  if (schema.properties && schema.additionalProperties !== undefined && schema.additionalProperties !== false) {
    out.push(`${at}: properties and additionalProperties are mutually exclusive`);
  }
  if (schema["x-kubernetes-list-type"] && schema.type !== "array") out.push(`${at}: x-kubernetes-list-type on a non-array`);
  if (schema["x-kubernetes-list-type"] === "set" && schema.items && !["string", "integer", "number", "boolean"].includes(schema.items.type)) {
    out.push(`${at}: x-kubernetes-list-type set needs scalar items`);
  }
  if (schema["x-kubernetes-list-type"] === "map") {
    const keys = schema["x-kubernetes-list-map-keys"] || [];
    if (!keys.length) out.push(`${at}: x-kubernetes-list-type map needs x-kubernetes-list-map-keys`);
    const req = (schema.items && schema.items.required) || [];
    for (const k of keys) if (!req.includes(k)) out.push(`${at}: map key "${k}" must be required`);
  }
  if (schema.type === "array" && !schema.items && !inJunctor) out.push(`${at}: an array needs items`);
  for (const [k, v] of Object.entries(schema.properties || {})) structuralErrors(v, `${at}.properties.${k}`, inJunctor, out);
  if (schema.items) structuralErrors(schema.items, `${at}.items`, inJunctor, out);
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    structuralErrors(schema.additionalProperties, `${at}.additionalProperties`, inJunctor, out);
  }
  for (const j of ["allOf", "anyOf", "oneOf"]) {
    (schema[j] || []).forEach((s, i) => structuralErrors(s, `${at}.${j}[${i}]`, true, out));
  }
  if (schema.not) structuralErrors(schema.not, `${at}.not`, true, out);
}

function crdChecks(crd) {
  const out = [];
  const spec = crd.spec || {};
  const names = spec.names || {};
  if (crd.metadata && names.plural && spec.group && crd.metadata.name !== `${names.plural}.${spec.group}`) {
    out.push(`/metadata/name must be ${names.plural}.${spec.group}`);
  }
  const versions = spec.versions || [];
  if (versions.filter((v) => v.storage).length !== 1) out.push("/spec/versions: exactly one version must be the storage version");
  versions.forEach((v, i) => {
    const s = v.schema && v.schema.openAPIV3Schema;
    if (!s) {
      out.push(`/spec/versions/${i}/schema/openAPIV3Schema is required`);
      return;
    }
    const errs = [];
    structuralErrors(s, `/spec/versions/${i}/schema/openAPIV3Schema`, false, errs);
    out.push(...errs);
    if (s.properties && s.properties.metadata && Object.keys(s.properties.metadata).some((k) => k !== "type")) {
      out.push(`/spec/versions/${i}/schema/openAPIV3Schema/properties/metadata: only its type may be given`);
    }
  });
  return out;
}

// ------------------------------------------------------------------------------ custom resources

// An OpenAPI v3 schema of a CRD as ajv takes it: unknown fields become errors where the API server
// would prune or refuse them (kubectl --validate=strict), sets are unique.
function toAjv(schema, isRoot) {
  if (schema === null || typeof schema !== "object") return schema;
  if (Array.isArray(schema)) return schema.map((s) => toAjv(s, false));
  const out = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k.startsWith("x-kubernetes-") || k === "nullable") continue;
    if (k === "properties") {
      out.properties = {};
      for (const [pk, pv] of Object.entries(v)) out.properties[pk] = toAjv(pv, false);
    } else if (["items", "additionalProperties", "not"].includes(k)) {
      out[k] = typeof v === "object" ? toAjv(v, false) : v;
    } else if (["allOf", "anyOf", "oneOf"].includes(k)) {
      out[k] = v.map((s) => toAjv(s, false));
    } else {
      out[k] = v;
    }
  }
  if (schema.nullable === true && out.type) out.type = [out.type, "null"];
  if (schema["x-kubernetes-list-type"] === "set") out.uniqueItems = true;
  if (schema.properties && schema["x-kubernetes-preserve-unknown-fields"] !== true && out.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  if (isRoot) {
    out.properties = { ...out.properties };
    out.properties.metadata = {
      type: "object",
      required: ["name"],
      properties: { name: { type: "string", minLength: 1, maxLength: 253, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" } },
    };
  }
  return out;
}

function loadCrds(dir, ajv) {
  const byKind = new Map(); // "group/version Kind" -> validate function
  const groups = new Set();
  if (!dir || !fs.existsSync(dir)) return { byKind, groups };
  for (const f of fs.readdirSync(dir).sort()) {
    if (!/\.ya?ml$/.test(f)) continue;
    for (const { obj } of readDocs(path.join(dir, f), fs.readFileSync(path.join(dir, f), "utf8"))) {
      if (obj.kind !== "CustomResourceDefinition") continue;
      groups.add(obj.spec.group);
      for (const v of obj.spec.versions || []) {
        if (!v.served) continue;
        const key = `${obj.spec.group}/${v.name} ${obj.spec.names.kind}`;
        // compiled on first use: most runs check a few kinds
        let compiled = null;
        const schema = v.schema.openAPIV3Schema;
        const validate = (doc) => {
          if (!compiled) compiled = ajv.compile(toAjv(schema, true));
          const ok = compiled(doc);
          validate.errors = compiled.errors;
          return ok;
        };
        byKind.set(key, validate);
      }
    }
  }
  return { byKind, groups };
}

// ---------------------------------------------------------------------------------------------- main

async function main() {
  const args = process.argv.slice(2);
  let crdDir = DEFAULT_CRDS;
  let quiet = false;
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--crds") {
      if (i + 1 >= args.length) usage("--crds needs a directory");
      crdDir = args[++i];
    } else if (args[i] === "-q") {
      quiet = true;
    } else if (args[i] === "-h" || args[i] === "--help") {
      usage();
    } else if (args[i].startsWith("-") && args[i] !== "-") {
      usage(`unknown option ${args[i]}`);
    } else {
      files.push(args[i]);
    }
  }
  if (!files.length) files.push("-");

  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -2147483648 && n <= 2147483647 });
  ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });

  let docs = [];
  let crds;
  try {
    crds = loadCrds(crdDir, ajv);
    for (const f of files) {
      const text = f === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(f, "utf8");
      docs = docs.concat(readDocs(f === "-" ? "<stdin>" : f, text));
    }
  } catch (e) {
    console.error(`check_manifests: ${e.message}`);
    process.exit(2);
  }

  let bad = 0;
  const kinds = {};
  for (const { where, obj } of docs) {
    const errs = [];
    const apiVersion = obj && obj.apiVersion;
    const kind = obj && obj.kind;
    const name = (obj && obj.metadata && obj.metadata.name) || "?";
    if (typeof obj !== "object" || Array.isArray(obj)) {
      errs.push("a manifest must be a mapping");
    } else if (typeof apiVersion !== "string" || typeof kind !== "string") {
      errs.push("apiVersion and kind are required");
    } else {
      const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
      const validate = crds.byKind.get(`${apiVersion} ${kind}`);
      if (validate) {
        if (!validate(obj)) errs.push(...ajvErrors(validate.errors));
      } else if (crds.groups.has(group)) {
        errs.push(`no CustomResourceDefinition in ${crdDir} serves ${apiVersion} ${kind}`);
      } else {
        const cls = await modelClass(apiVersion, kind);
        if (!cls) {
          errs.push(`unknown apiVersion/kind ${apiVersion} ${kind} (no kubernetes-models class, no CRD)`);
        } else {
          try {
            new cls(obj).validate();
          } catch (e) {
            if (e.errors) errs.push(...ajvErrors(e.errors));
            else errs.push(e.message);
          }
          if (!obj.metadata || !obj.metadata.name) errs.push("/metadata/name is required");
          if (kind === "CustomResourceDefinition") errs.push(...crdChecks(obj));
        }
      }
    }
    kinds[kind] = (kinds[kind] || 0) + 1;
    if (errs.length) {
      bad++;
      for (const e of errs) console.error(`${where} ${kind || "?"}/${name}: ${e}`);
    }
  }
  if (!quiet || bad) {
    const summary = Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ");
    console.log(`checked ${docs.length} documents (${summary}): ${bad ? `${bad} with errors` : "all valid"}`);
  }
  process.exit(bad ? 1 : 0);
}

main().catch((e) => {
  console.error(`check_manifests: ${e.stack || e}`);
  process.exit(2);
});
