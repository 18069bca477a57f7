// Loads pages of the built site in headless Debian Chromium and reports what a reader sees, as
// JSON on stdout; the Rust test (xtask/tests/site.rs) asserts on it.
// Usage: node browser-check.cjs BASE_URL SCREENSHOT_DIR PAGE[=SCREENSHOT.png]...
const path = require('node:path');
const { chromium } = require('playwright-core');

// Flags known to work here as root on a closed network (see the machine notes in the repo's CI).
const ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Containers (the CI job runs in one) give /dev/shm 64 MiB, too little for Chromium.
    '--disable-dev-shm-usage',
];

async function inspect(browser, base, shotDir, spec) {
    const [page_path, shot] = spec.split('=');
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    const url = base + page_path;
    page.on('console', (m) => {
        // The 404 status of a missing page itself is reported as a console error; it is expected.
        if (m.type() === 'error' && m.location().url !== url) errors.push(`console: ${m.text()}`);
    });
    page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    const response = await page.goto(url, { waitUntil: 'networkidle' });
    const diagrams = await page.$$eval('pre.mermaid', (els) => els.length);
    if (diagrams > 0) {
        await page.waitForFunction(
            () => Array.from(document.querySelectorAll('pre.mermaid')).every((e) => e.querySelector('svg')),
            null, { timeout: 20000 },
        ).catch(() => {});
    }
    const facts = await page.evaluate(() => {
        const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
        const edit = document.querySelector('a[rel="edit"]');
        return {
            title: document.title,
            diagrams: document.querySelectorAll('pre.mermaid').length,
            svg_diagrams: Array.from(document.querySelectorAll('pre.mermaid')).filter((e) => e.querySelector('svg')).length,
            svg_text: Array.from(document.querySelectorAll('pre.mermaid svg .nodeLabel, pre.mermaid svg .edgeLabel'))
                .map((s) => s.textContent.trim()).filter((t) => t).join(' '),
            captions: Array.from(document.querySelectorAll('.code-title')).filter(visible).map((e) => e.textContent.trim()),
            edit_link: edit ? edit.href : null,
            stylesheets: document.styleSheets.length,
            body_font: getComputedStyle(document.body).fontFamily,
            highlighted: document.querySelectorAll('pre code.hljs').length,
        };
    });
    // Switching to a dark theme re-renders the diagrams in mermaid's dark palette.
    if (facts.svg_diagrams > 0) {
        const before = await page.$eval('pre.mermaid svg style', (s) => s.textContent);
        await page.evaluate(() => {
            const html = document.documentElement;
            html.classList.remove('light', 'rust', 'ayu', 'navy');
            html.classList.add('coal');
        });
        await page.waitForFunction(
            (old) => { const s = document.querySelector('pre.mermaid svg style'); return s && s.textContent !== old; },
            before, { timeout: 10000 },
        ).catch(() => {});
        facts.dark_rerendered = await page.$eval('pre.mermaid svg style', (s, old) => s.textContent !== old, before).catch(() => false);
    }
    // The search box: on the first page only, search for SEARCH_TERM and count the results.
    if (process.env.SEARCH_TERM && spec === process.argv[4]) {
        await page.click('#mdbook-search-toggle');
        await page.type('#mdbook-searchbar', process.env.SEARCH_TERM, { delay: 20 });
        await page.waitForFunction(() => document.querySelectorAll('#mdbook-searchresults li').length > 0, null, { timeout: 10000 }).catch(() => {});
        facts.search_results = await page.$$eval('#mdbook-searchresults li a', (as) => as.map((a) => a.getAttribute('href')));
        await page.keyboard.press('Escape');
    }
    if (shot) {
        await page.screenshot({ path: path.join(shotDir, shot), fullPage: true });
    }
    await page.close();
    return { page: page_path, status: response ? response.status() : null, errors, ...facts };
}

async function main([base, shotDir, ...pages]) {
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
    try {
        const results = [];
        for (const spec of pages) {
            results.push(await inspect(browser, base, shotDir, spec));
        }
        process.stdout.write(JSON.stringify(results, null, 1) + '\n');
    } finally {
        await browser.close();
    }
}

main(process.argv.slice(2)).catch((e) => { console.error(e); process.exit(2); });
