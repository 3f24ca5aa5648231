#!/usr/bin/env node
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// client.mjs: one call through npm's `openai` SDK (maxRetries: 0), summarised as one JSON line on
// stdout so shell tests can assert on it. Run it from the folder whose node_modules holds the
// pinned `openai` (see setup.sh); ESM resolves packages next to this file.
//
//   node client.mjs --base-url URL --api-key K --model M [--stream] [--embeddings] [--models]
//                   [--completions] [--expect-error STATUS|any|connection] [options]
//
// Options:
//   --prompt TEXT            user message / prompt (default "Say hello")
//   --include-usage          stream_options.include_usage = true
//   --max-tokens N           max_tokens
//   --header 'Name: value'   extra request header (repeatable), e.g. 'X-Test-Chunks: 3'
//   --club-test JSON         body field "club_test" (the test upstream's controls)
//   --input TEXT             embeddings input (repeatable; default: the prompt)
//   --encoding-format F      embeddings: float or base64 (default: the SDK's choice, base64)
//   --dimensions N           embeddings dimensions
//   --timeout MS             request timeout (default 30000)
//
// Output (one line of JSON): see the summary object below. Exit status: 0 if the outcome is the
// expected one (success, or with --expect-error the matching error), 1 otherwise, 2 on bad usage.

import OpenAI from 'openai';
import { readFileSync } from 'node:fs';

function usage(msg) {
        process.stderr.write(`client.mjs: ${msg}\n`);
        process.exit(2);
}

function parseArgs(argv) {
        const a = { prompt: 'Say hello', headers: {}, inputs: [], timeout: 30000, apiKey: 'sk-test' };
        const flags = { '--stream': 'stream', '--embeddings': 'embeddings', '--models': 'models',
                        '--completions': 'completions', '--include-usage': 'includeUsage' };
        for (let i = 0; i < argv.length; i++) {
                const k = argv[i];
                const val = () => {
                        if (i + 1 >= argv.length)
                                usage(`${k} needs a value`);
                        return argv[++i];
                };
                if (flags[k]) { a[flags[k]] = true; continue; }
                switch (k) {
                case '--base-url': a.baseURL = val(); break;
                case '--api-key': a.apiKey = val(); break;
                case '--model': a.model = val(); break;
                case '--prompt': a.prompt = val(); break;
                case '--expect-error': a.expectError = val(); break;
                case '--max-tokens': a.maxTokens = Number(val()); break;
                case '--input': a.inputs.push(val()); break;
                case '--encoding-format': a.encodingFormat = val(); break;
                case '--dimensions': a.dimensions = Number(val()); break;
                case '--timeout': a.timeout = Number(val()); break;
                case '--club-test':
                        try { a.clubTest = JSON.parse(val()); } catch { usage('--club-test needs JSON'); }
                        break;
                case '--header': {
                        const h = val(), colon = h.indexOf(':');
                        if (colon <= 0)
                                usage(`bad --header ${h}`);
                        a.headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
                        break;
                }
                case '--help': case '-h':
                        process.stdout.write(readFileSync(new URL(import.meta.url)).toString()
                                .split('\n').filter(l => l.startsWith('//')).map(l => l.slice(3)).join('\n') + '\n');
                        process.exit(0);
                        break;
                default:
                        usage(`unknown argument ${k}`);
                }
        }
        if (!a.baseURL)
                usage('--base-url is required');
        if (!a.model && !a.models)
                usage('--model is required');
        return a;
}

function sdkVersion() {
        try {
                const url = new URL('./node_modules/openai/package.json', import.meta.url);
                return JSON.parse(readFileSync(url)).version;
        } catch {
                return null;
        }
}

function describeError(e) {
        const body = (e && typeof e.error === 'object' && e.error) ? (e.error.error ?? e.error) : null;
        let cause = e?.cause;
        const causes = [];
        while (cause && causes.length < 4) {
                causes.push(`${cause.name ?? 'Error'}: ${cause.message ?? cause}${cause.code ? ` (${cause.code})` : ''}`);
                cause = cause.cause;
        }
        return {
                status: typeof e?.status === 'number' ? e.status : null,
                class: e?.constructor?.name ?? typeof e,
                message: body?.message ?? e?.message ?? String(e),
                type: e?.type ?? body?.type ?? null,
                code: e?.code ?? body?.code ?? null,
                param: e?.param ?? body?.param ?? null,
                cause: causes.length ? causes.join(' <- ') : null,
        };
}

const args = parseArgs(process.argv.slice(2));
const client = new OpenAI({
        apiKey: args.apiKey,
        baseURL: args.baseURL,
        maxRetries: 0,
        timeout: args.timeout,
        defaultHeaders: args.headers,
});

const mode = args.models ? 'models'
        : args.embeddings ? 'embeddings'
        : (args.completions ? 'completions' : 'chat') + (args.stream ? '-stream' : '');

const out = {
        ok: false,
        mode,
        sdk_version: sdkVersion(),
        content: null,          // chat / completions: the text (deltas concatenated when streaming)
        chunks: null,           // streaming: chunk objects received, the usage-only chunk included
        content_chunks: null,   // streaming: chunks that carried non-empty content / text
        finish_reason: null,
        usage: null,
        id: null,
        model: null,
        system_fingerprint: null,
        first_chunk_ms: null,   // streaming: time from the request to the first chunk
        embeddings: null,       // embeddings: number of vectors
        dimensions: null,       // embeddings: length of the first vector
        first: null,            // embeddings: first three values of the first vector
        models: null,           // models: ids
        owned_by: null,         // models: owned_by of each
        error: null,            // {status, class, message, type, code, param, cause}
        elapsed_ms: null,
};

const started = performance.now();
try {
        const extra = args.clubTest ? { club_test: args.clubTest } : {};
        if (mode === 'models') {
                const ids = [], owners = [];
                for await (const m of client.models.list()) {
                        ids.push(m.id);
                        owners.push(m.owned_by);
                }
                out.models = ids;
                out.owned_by = owners;
        } else if (mode === 'embeddings') {
                const req = { model: args.model, input: args.inputs.length > 1 ? args.inputs : (args.inputs[0] ?? args.prompt), ...extra };
                if (args.encodingFormat)
                        req.encoding_format = args.encodingFormat;
                if (args.dimensions)
                        req.dimensions = args.dimensions;
                const r = await client.embeddings.create(req);
                out.embeddings = r.data.length;
                out.dimensions = r.data[0]?.embedding?.length ?? null;
                out.first = r.data[0] ? Array.from(r.data[0].embedding.slice(0, 3)) : null;
                out.usage = r.usage ?? null;
                out.model = r.model ?? null;
        } else {
                const chat = !args.completions;
                const req = chat ? { model: args.model, messages: [{ role: 'user', content: args.prompt }] }
                                 : { model: args.model, prompt: args.prompt };
                Object.assign(req, extra);
                if (args.maxTokens)
                        req.max_tokens = args.maxTokens;
                if (args.stream) {
                        req.stream = true;
                        if (args.includeUsage)
                                req.stream_options = { include_usage: true };
                }
                const api = chat ? client.chat.completions : client.completions;
                if (args.stream) {
                        out.content = '';
                        out.chunks = 0;
                        out.content_chunks = 0;
                        const stream = await api.create(req);
                        for await (const chunk of stream) {
                                if (out.chunks === 0)
                                        out.first_chunk_ms = Math.round(performance.now() - started);
                                out.chunks++;
                                out.id ??= chunk.id ?? null;
                                out.model ??= chunk.model ?? null;
                                out.system_fingerprint ??= chunk.system_fingerprint ?? null;
                                const choice = chunk.choices?.[0];
                                const piece = chat ? choice?.delta?.content : choice?.text;
                                if (piece) {
                                        out.content += piece;
                                        out.content_chunks++;
                                }
                                if (choice?.finish_reason)
                                        out.finish_reason = choice.finish_reason;
                                if (chunk.usage)
                                        out.usage = chunk.usage;
                        }
                } else {
                        const r = await api.create(req);
                        const choice = r.choices?.[0];
                        out.content = (chat ? choice?.message?.content : choice?.text) ?? null;
                        out.finish_reason = choice?.finish_reason ?? null;
                        out.usage = r.usage ?? null;
                        out.id = r.id ?? null;
                        out.model = r.model ?? null;
                        out.system_fingerprint = r.system_fingerprint ?? null;
                }
        }
} catch (e) {
        out.error = describeError(e);
}
out.elapsed_ms = Math.round(performance.now() - started);

const exp = args.expectError;
if (exp === undefined)
        out.ok = out.error === null;
else if (out.error === null)
        out.ok = false;
else if (exp === 'any')
        out.ok = true;
else if (exp === 'connection')
        out.ok = out.error.status === null;
else
        out.ok = String(out.error.status) === exp;

process.stdout.write(JSON.stringify(out) + '\n');
process.exitCode = out.ok ? 0 : 1;
