#!/usr/bin/env node
// A test OTLP trace receiver: OTLP/gRPC (TraceService/Export) and OTLP/HTTP protobuf (POST /v1/traces),
// decoding with OpenTelemetry's own generated protobuf code (@opentelemetry/otlp-transformer 0.57.2,
// the last release that ships the decoders) and the gRPC server of @grpc/grpc-js.
//
// Every decoded span becomes one JSON line in the output file:
//   {"transport", "service_name", "trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
//    "start_ns", "end_ns", "status_code", "attributes": {key: value}}
// ids in lower-case hex ("" for an empty parent), kind as the OTLP enum number (2 SERVER, 3 CLIENT).
//
// Usage: node receiver.js --out FILE [--grpc-port N] [--http-port N] [--delay-ms N] [--fail]
//                         [--ready-file PATH] [--host ADDR]
//   --host: the IPv4 address both servers listen on (default 127.0.0.1; scripts/mesh.sh uses the
//   control namespace's pod address).
//   port 0 picks a free port; the ready file receives {"grpc": port, "http": port} once both listen.
//   --delay-ms: answer each export that late (a slow receiver); --fail: answer every export with an
//   error (gRPC UNAVAILABLE, HTTP 503) after recording nothing.
'use strict';

const fs = require('fs');
const http = require('http');
const grpc = require('@grpc/grpc-js');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');

const v1 = root.opentelemetry.proto.collector.trace.v1;
const Request = v1.ExportTraceServiceRequest;
const Response = v1.ExportTraceServiceResponse;

function parseArgs(argv) {
    const o = {grpcPort: null, httpPort: null, out: null, delayMs: 0, fail: false, readyFile: null, host: '127.0.0.1'};
    for (let i = 2; i < argv.length; ++i) {
        const a = argv[i];
        const next = () => argv[++i];
        if (a === '--grpc-port') o.grpcPort = parseInt(next(), 10);
        else if (a === '--http-port') o.httpPort = parseInt(next(), 10);
        else if (a === '--out') o.out = next();
        else if (a === '--delay-ms') o.delayMs = parseInt(next(), 10);
        else if (a === '--fail') o.fail = true;
        else if (a === '--ready-file') o.readyFile = next();
        else if (a === '--host') o.host = next();
        else throw new Error('unknown argument ' + a);
    }
    if (!o.out) throw new Error('--out FILE is required');
    if (o.grpcPort === null && o.httpPort === null) o.grpcPort = o.httpPort = 0;
    return o;
}

const opts = parseArgs(process.argv);
let exportCount = 0;

function hex(buf) {
    if (!buf) return '';
    return Buffer.from(buf).toString('hex');
}

function anyValue(v) {
    if (v === null || v === undefined) return null;
    if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
    if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
    if (v.intValue !== undefined && v.intValue !== null) return Number(v.intValue.toString());
    if (v.doubleValue !== undefined && v.doubleValue !== null) return v.doubleValue;
    if (v.arrayValue) return (v.arrayValue.values || []).map(anyValue);
    if (v.bytesValue) return hex(v.bytesValue);
    return null;
}

function attrs(list) {
    const o = {};
    for (const kv of list || []) o[kv.key] = anyValue(kv.value);
    return o;
}

function record(req, transport) {
    const lines = [];
    for (const rs of req.resourceSpans || []) {
        const res = attrs(rs.resource ? rs.resource.attributes : []);
        for (const ss of rs.scopeSpans || []) {
            for (const s of ss.spans || []) {
                lines.push(JSON.stringify({
                    transport,
                    service_name: res['service.name'] === undefined ? null : res['service.name'],
                    scope: ss.scope ? ss.scope.name : null,
                    trace_id: hex(s.traceId),
                    span_id: hex(s.spanId),
                    parent_span_id: hex(s.parentSpanId),
                    trace_state: s.traceState || '',
                    name: s.name,
                    kind: s.kind,
                    flags: s.flags || 0,
                    start_ns: s.startTimeUnixNano ? s.startTimeUnixNano.toString() : '0',
                    end_ns: s.endTimeUnixNano ? s.endTimeUnixNano.toString() : '0',
                    status_code: s.status ? (s.status.code || 0) : 0,
                    attributes: attrs(s.attributes),
                }));
            }
        }
    }
    exportCount += 1;
    if (lines.length) fs.appendFileSync(opts.out, lines.join('\n') + '\n');
    return lines.length;
}

function later(fn) {
    if (opts.delayMs > 0) setTimeout(fn, opts.delayMs);
    else fn();
}

const servers = {};

function startGrpc(port) {
    return new Promise((resolve, reject) => {
        const server = new grpc.Server();
        const service = {
            Export: {
                path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
                requestStream: false,
                responseStream: false,
                requestSerialize: (m) => Request.encode(m).finish(),
                requestDeserialize: (b) => Request.decode(b),
                responseSerialize: (m) => Buffer.from(Response.encode(m).finish()),
                responseDeserialize: (b) => Response.decode(b),
            },
        };
        server.addService(service, {
            Export: (call, callback) => {
                later(() => {
                    if (opts.fail) return callback({code: grpc.status.UNAVAILABLE, details: 'receiver told to fail'});
                    record(call.request, 'grpc');
                    callback(null, Response.create({}));
                });
            },
        });
        server.bindAsync(opts.host + ':' + port, grpc.ServerCredentials.createInsecure(), (err, bound) => {
            if (err) return reject(err);
            servers.grpc = server;
            resolve(bound);
        });
    });
}

function startHttp(port) {
    return new Promise((resolve, reject) => {
        const server = http.createServer((req, res) => {
            const chunks = [];
            req.on('data', (c) => chunks.push(c));
            req.on('end', () => {
                later(() => {
                    if (req.method !== 'POST' || req.url !== '/v1/traces') {
                        res.writeHead(404, {'content-type': 'text/plain'});
                        return res.end('not found\n');
                    }
                    if (!(req.headers['content-type'] || '').startsWith('application/x-protobuf')) {
                        res.writeHead(415, {'content-type': 'text/plain'});
                        return res.end('want application/x-protobuf\n');
                    }
                    if (opts.fail) {
                        res.writeHead(503, {'content-type': 'text/plain'});
                        return res.end('receiver told to fail\n');
                    }
                    let decoded;
                    try {
                        decoded = Request.decode(Buffer.concat(chunks));
                    } catch (e) {
                        res.writeHead(400, {'content-type': 'text/plain'});
                        return res.end('bad protobuf: ' + e.message + '\n');
                    }
                    record(decoded, 'http');
                    const body = Buffer.from(Response.encode(Response.create({})).finish());
                    res.writeHead(200, {'content-type': 'application/x-protobuf', 'content-length': body.length});
                    res.end(body);
                });
            });
        });
        server.on('error', reject);
        server.listen(port, opts.host, () => {
            servers.http = server;
            resolve(server.address().port);
        });
    });
}

async function main() {
    fs.writeFileSync(opts.out, '');
    const ready = {};
    if (opts.grpcPort !== null) ready.grpc = await startGrpc(opts.grpcPort);
    if (opts.httpPort !== null) ready.http = await startHttp(opts.httpPort);
    if (opts.readyFile) {
        fs.writeFileSync(opts.readyFile + '.tmp', JSON.stringify(ready));
        fs.renameSync(opts.readyFile + '.tmp', opts.readyFile);
    }
    process.stdout.write('otlp receiver ready ' + JSON.stringify(ready) + '\n');
}

function stop() {
    if (servers.grpc) servers.grpc.forceShutdown();
    if (servers.http) servers.http.close();
    process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

main().catch((e) => {
    process.stderr.write('otlp receiver: ' + (e && e.stack ? e.stack : e) + '\n');
    process.exit(1);
});
