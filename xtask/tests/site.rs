//! The published site, end to end: the real pinned mdBook builds the book through our
//! preprocessor; the generated pages and the archive match what `extract` produces; a book that
//! does not lint fails the build with its Markdown file and line; headless Chromium loads the
//! pages (diagrams render as SVG, captions show, the edit link points at the page's source, no
//! JavaScript error). The workflows are checked in `tests/workflows.rs`.
//!
//! mdBook is installed when missing (`cargo install`). The browser check skips only when `CI` is
//! unset and Chromium is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use xtask::site;

mod cdp;

fn root() -> PathBuf {
    xtask::project_root()
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The pinned mdBook tools, installed once per test run.
fn tools() -> &'static site::Tools {
    static TOOLS: OnceLock<site::Tools> = OnceLock::new();
    TOOLS.get_or_init(|| site::ensure_tools().expect("install the pinned mdBook tools"))
}

/// The real book, built once into target/test-site.
fn built_site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        tools();
        let out = root().join("target/test-site");
        let _ = std::fs::remove_dir_all(&out);
        site::build(&root(), &out, Path::new(env!("CARGO_BIN_EXE_xtask")))
            .expect("cargo xtask book");
        out
    })
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The HTML page mdBook renders for a chapter (`src/<dir>/README.md` -> `<dir>/index.html`).
fn html_page(md: &str) -> String {
    let rel = md.strip_prefix("src/").unwrap_or(md);
    match rel.strip_suffix("README.md") {
        Some(dir) => format!("{dir}index.html"),
        None => rel.replace(".md", ".html"),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text of an HTML fragment without tags' entities (what a reader sees, and copies).
fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        if la.get(i) != lb.get(i) {
            return format!("line {}: {:?} vs {:?}", i + 1, la.get(i), lb.get(i));
        }
    }
    "same lines, different line endings".into()
}

#[test]
fn mdbook_build_fails_with_the_markdown_file_and_line() {
    // (fixture book, where the error is, its code): a block that breaks the block contract, and
    // a YAML error in the second fragment of a file (the line is in that fragment's chapter).
    for (fixture, at, code) in [
        (
            "lint-error",
            "src/chapter.md:11",
            "book::unmarked-config-block",
        ),
        ("yaml-error", "src/chapter.md:13", "yaml::syntax"),
    ] {
        let book = root().join("tests/fixtures/books").join(fixture);
        let out = tempfile::tempdir().unwrap();
        let output = Command::new(&tools().mdbook)
            .arg("build")
            .arg(&book)
            .arg("--dest-dir")
            .arg(out.path())
            .env(
                "MDBOOK_PREPROCESSOR__XTASK__COMMAND",
                format!("{} mdbook", env!("CARGO_BIN_EXE_xtask")),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{fixture}: mdbook build must fail:\n{stderr}"
        );
        assert!(
            stderr.contains(at),
            "{fixture}: the error names {at}:\n{stderr}"
        );
        assert!(stderr.contains(code), "{fixture}: {code}\n{stderr}");
        assert!(
            !out.path().join("chapter.html").exists(),
            "{fixture}: nothing is rendered"
        );
    }
}

#[test]
fn site_pages_match_what_extract_produces() {
    let site = built_site();
    let book = xtask::book::load(&root()).expect("the book loads");
    let tree = xtask::extract::assemble(&book, &Default::default()).expect("the book extracts");

    // The file index shows every file of the tree, with exactly the content extract writes.
    let files = read(&site.join("reference/files.html"));
    for tf in tree.files.values() {
        let anchor = format!(
            "id=\"{}\"",
            xtask::preprocess::captions::file_anchor(&tf.path)
        );
        let at = files
            .find(&anchor)
            .unwrap_or_else(|| panic!("files.html has no section for {}", tf.path));
        let code_start = files[at..]
            .find("<code class=\"language-")
            .map(|p| at + p)
            .expect("a code block");
        let body_start = code_start + files[code_start..].find('>').unwrap() + 1;
        let body_end = body_start + files[body_start..].find("</code>").unwrap();
        let shown = html_unescape(&files[body_start..body_end]);
        assert!(
            shown == tf.content,
            "{} in files.html differs from extract: {}",
            tf.path,
            first_difference(&shown, &tf.content)
        );
    }

    // Every extracted block of a chapter carries its caption, and no info-string attribute is
    // left in the HTML.
    for ch in &book.chapters {
        let page = site.join(html_page(&ch.path));
        let html = read(&page);
        for b in &ch.blocks {
            if let Some(target) = b.target() {
                let caption = format!("<code>{}</code>", html_escape(target));
                assert!(
                    html.contains(&caption),
                    "{}: no caption for {target}",
                    page.display()
                );
            }
        }
        assert!(
            !html.contains("title=&quot;"),
            "{}: an info-string attribute reached the HTML",
            page.display()
        );
    }

    // The routing table lists every sample of the book's routes blocks with what the routing
    // simulator answers: location line, upstream, server.
    let routing = read(&site.join("reference/routing-table.html"));
    // The samples' tables, then the variants' section.
    let (routing, variants) = routing
        .split_once("id=\"variants\"")
        .unwrap_or((routing.as_str(), ""));
    let samples = xtask::preprocess::pages::samples(&book);
    let rows: Vec<&str> = routing
        .split("<tr>")
        .skip(1)
        .filter(|r| r.contains("<td"))
        .collect();
    if !samples.is_empty() {
        let router = xtask::route::Router::from_tree(&tree).expect("the nginx config loads");
        for s in &samples {
            // The whole first cell: the request, and its client address when the sample gives one.
            let request = format!(
                "<td><code>{}</code>{}</td>",
                html_escape(&format!("{} {}", s.method, s.uri)),
                s.from
                    .as_deref()
                    .map(|f| format!(" from {f}"))
                    .unwrap_or_default()
            );
            let row = rows
                .iter()
                .find(|r| r.contains(&request))
                .unwrap_or_else(|| panic!("routing-table.html lacks {request}"));
            let client = s
                .from
                .as_deref()
                .unwrap_or(xtask::route::router::DEFAULT_CLIENT);
            let o = router.route_from(&s.method, &s.uri, client);
            if let Some(u) = &o.upstream {
                assert!(
                    row.contains(&format!("<code>{}</code>", html_escape(u))),
                    "{request}: upstream {u} in {row}"
                );
            }
            if let Some(server) = &o.server {
                let short = server.trim_start_matches("unix:/sockets/");
                assert!(
                    row.contains(&format!("<code>{}</code>", html_escape(short))),
                    "{request}: server {server} in {row}"
                );
            }
            if let Some(l) = &o.location {
                assert!(
                    row.contains(&format!("{}?plain=1#L{}", l.file, l.line)),
                    "{request}: location line {}:{} in {row}",
                    l.file,
                    l.line
                );
            }
            if let (None, Some(status)) = (&o.upstream, o.status) {
                assert!(
                    row.contains(&format!("returns {status}")),
                    "{request}: status {status} in {row}"
                );
            }
        }
    }
    assert_eq!(
        rows.len(),
        samples.len(),
        "one row per sample in routing-table.html"
    );
    // Each variant that changes an upstream's servers has its section, naming that upstream and
    // each server it adds.
    let main_router = xtask::route::Router::from_tree(&tree).expect("the nginx config loads");
    for v in xtask::extract::variants(&book) {
        let opts = xtask::extract::Options {
            variant: Some(v.clone()),
            ..Default::default()
        };
        let vt = xtask::extract::assemble(&book, &opts).expect("the variant extracts");
        let Ok(r) = xtask::route::Router::from_tree(&vt) else {
            continue;
        };
        for (name, u) in &r.upstreams {
            let servers = |u: &xtask::route::router::Upstream| -> Vec<String> {
                u.peers.iter().map(|p| p.name.clone()).collect()
            };
            let before = main_router
                .upstreams
                .get(name)
                .map(servers)
                .unwrap_or_default();
            let after = servers(u);
            if before == after {
                continue;
            }
            assert!(
                variants.contains(&format!("id=\"the-{v}-variant\"")),
                "routing-table.html has no section for variant {v}"
            );
            assert!(
                variants.contains(&format!("<td><code>{}</code></td>", html_escape(name))),
                "variant {v}: upstream {name} not listed"
            );
            for added in after.iter().filter(|a| !before.contains(a)) {
                let short = added.trim_start_matches("unix:/sockets/");
                assert!(
                    variants.contains(&format!("<code>{}</code>", html_escape(short))),
                    "variant {v}: {name} gains {short}, not shown"
                );
            }
        }
    }

    // The archive holds exactly the tree.
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(site.join(site::ARCHIVE))
        .output()
        .unwrap();
    assert!(listing.status.success());
    let mut listed: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| {
            l.trim_start_matches(&format!("{}/", site::ARCHIVE_DIR))
                .to_string()
        })
        .collect();
    listed.sort();
    let expected: Vec<String> = tree.files.keys().cloned().collect();
    assert_eq!(
        listed, expected,
        "deploy.tar.gz holds exactly the extracted files"
    );

    // The introduction links the archive.
    assert!(read(&site.join("introduction.html")).contains("<a href=\"deploy.tar.gz\" download"));
}

#[test]
fn vendored_mermaid_is_the_pinned_version() {
    site::check_vendored_mermaid(&root()).unwrap();
}

/// Serves `dir` under the site's path (`/NAME/` of book.toml's repository, as GitHub Pages does) on a loopback port, answering
/// unknown paths with the site's 404 page. Returns the base URL.
fn serve(dir: PathBuf) -> String {
    let prefix = site::repository(&root()).unwrap().site_url;
    let base = prefix.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let path = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split(['?', '#'])
                    .next()
                    .unwrap()
                    .to_string();
                let rel = path
                    .strip_prefix(prefix.as_str())
                    .map(|p| if p.is_empty() { "index.html" } else { p });
                let file = rel
                    .filter(|r| !r.contains(".."))
                    .map(|r| dir.join(r))
                    .filter(|p| p.is_file());
                let (status, body, file) = match file {
                    Some(f) => ("200 OK", std::fs::read(&f).unwrap(), f),
                    None => (
                        "404 Not Found",
                        std::fs::read(dir.join("404.html")).unwrap(),
                        dir.join("404.html"),
                    ),
                };
                let ctype = match file.extension().and_then(|e| e.to_str()) {
                    Some("html") => "text/html; charset=utf-8",
                    Some("css") => "text/css",
                    Some("js") => "application/javascript",
                    Some("svg") => "image/svg+xml",
                    Some("png") => "image/png",
                    Some("woff2") => "font/woff2",
                    Some("json") => "application/json",
                    _ => "application/octet-stream",
                };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    format!("http://127.0.0.1:{port}{base}")
}

/// Flags for Chromium as root in a container on a closed network: no sandbox (root), no shared
/// memory in /dev/shm (containers give it 64 MiB, too little), no GPU, nothing fetched in the
/// background, and stable rendering for screenshots.
const CHROMIUM_ARGS: &[&str] = &[
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--mute-audio",
    "--password-store=basic",
];

/// What a reader sees on one page (`PAGE` or `PAGE=SCREENSHOT.png`), as JSON for the
/// assertions and for target/browser-check/results.json: errors, document status and title,
/// diagrams (rendered, re-rendered after a switch to a dark theme with the theme menu, their
/// text), captions, edit link, stylesheets, and on request the results of a search typed into
/// the search box.
fn inspect(
    browser: &mut cdp::Chromium,
    base: &str,
    shots: &Path,
    spec: &str,
    search: Option<&str>,
) -> Result<serde_json::Value, String> {
    use std::time::Duration;
    let (page_path, shot) = match spec.split_once('=') {
        Some((p, s)) => (p, Some(s)),
        None => (spec, None),
    };
    let mut page = browser.new_page(1280, 900)?;
    let status = page.goto(&format!("{base}{page_path}"))?;
    let all_svg =
        "Array.from(document.querySelectorAll('pre.mermaid')).every((e) => e.querySelector('svg'))";
    if page.eval("document.querySelectorAll('pre.mermaid').length")? != 0 {
        // The assertions report a diagram that did not render.
        page.wait_for(all_svg, Duration::from_secs(20))?;
    }
    let mut facts = page.eval(
        "(() => {
            const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
            const edit = document.querySelector('a[rel=\"edit\"]');
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
        })()",
    )?;
    // Switching to a dark theme the way a reader does (the theme menu, which also swaps the
    // code highlighting stylesheets) re-renders the diagrams in mermaid's dark palette.
    if facts["svg_diagrams"].as_u64() > Some(0) {
        let style = "document.querySelector('pre.mermaid svg style')?.textContent ?? null";
        let before = page.eval(style)?;
        page.click("#mdbook-theme-toggle")?;
        page.click("#mdbook-theme-coal")?;
        // The menu stays open after a choice: close it as it was opened.
        page.click("#mdbook-theme-toggle")?;
        let changed = format!("({style}) !== null && ({style}) !== {before}");
        facts["dark_rerendered"] = page.wait_for(&changed, Duration::from_secs(10))?.into();
        facts["theme"] = page.eval("document.documentElement.className")?;
    }
    if let Some(term) = search {
        page.click("#mdbook-search-toggle")?;
        page.type_text(term)?;
        page.wait_for(
            "document.querySelectorAll('#mdbook-searchresults li').length > 0",
            Duration::from_secs(10),
        )?;
        facts["search_results"] = page.eval(
            "Array.from(document.querySelectorAll('#mdbook-searchresults li a')).map((a) => a.getAttribute('href'))",
        )?;
        page.press_escape()?;
    }
    if let Some(shot) = shot {
        page.screenshot_full_page(&shots.join(shot))?;
    }
    facts["page"] = page_path.into();
    facts["status"] = status.into();
    facts["errors"] = page.take_errors()?.into();
    Ok(facts)
}

/// Headless Chromium (Debian's package) loads the pages of the built site and checks what a
/// reader sees.
///
/// The browser is driven with the Chrome DevTools Protocol by our own small client
/// (`tests/cdp/mod.rs`) over `--remote-debugging-pipe`, not by a crate. The check needs about
/// twenty CDP methods and ten events (open a page in a fresh context, navigate, evaluate, mouse
/// and key input, screenshots; page exceptions, console and log entries, network activity to
/// know when the page is idle and which requests failed), and over the pipe CDP is NUL-separated
/// JSON, so the client is a few hundred
/// lines of `serde_json` with no new dependency: nothing more to compile or keep up to date. The
/// maintained `headless_chrome` crate (sync; its `fetch` feature, off by default, downloads a
/// browser) generates the whole protocol at build time and brings a WebSocket stack,
/// `derive_builder`, `rand` and more; `chromiumoxide` also needs an async runtime. Both would
/// cost every contributor compile time for the same twenty calls.
#[test]
fn browser_check() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        assert!(
            !in_ci(),
            "CI is set but Chromium ({chromium}) is missing: `cargo xtask setup debian` installs it"
        );
        eprintln!("skipped: Chromium is not installed (apt-get install chromium)");
        return;
    }
    let site = built_site();
    let base = serve(site.to_path_buf());
    let shots = root().join("target/browser-check");
    std::fs::create_dir_all(&shots).unwrap();

    // The pages to load: the introduction, the generated pages, every page with a diagram, and
    // a page that does not exist (the 404 page, with its styles and scripts loading).
    let mut pages = vec![
        "introduction.html=introduction.png".to_string(),
        "reference/routing-table.html=routing-table.png".to_string(),
        "reference/files.html".to_string(),
    ];
    for p in site::walk(site) {
        let rel = p
            .strip_prefix(site)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // index.html repeats the first chapter, print.html every chapter.
        if rel.ends_with(".html")
            && rel != "print.html"
            && rel != "index.html"
            && read(&p).contains("class=\"mermaid\"")
            && !pages.iter().any(|x| x.starts_with(&rel))
        {
            pages.push(rel);
        }
    }
    pages.push("no/such/page.html".into());

    let mut browser = cdp::Chromium::launch(Path::new(&chromium), CHROMIUM_ARGS)
        .unwrap_or_else(|e| panic!("cannot drive {chromium}: {e}"));
    eprintln!("browser check with {}", browser.version().unwrap());
    let results: Vec<serde_json::Value> = pages
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            // The search box is tried on the first page.
            let search = (i == 0).then_some("instance_map");
            inspect(&mut browser, &base, &shots, spec, search)
                .unwrap_or_else(|e| panic!("{spec}: {e}"))
        })
        .collect();
    drop(browser);
    std::fs::write(
        shots.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();

    let book = xtask::book::load(&root()).unwrap();
    let template = site::repository(&root()).unwrap().edit_url_template;
    let mut diagrams = 0;
    for r in &results {
        let page = r["page"].as_str().unwrap();
        let errors = r["errors"].as_array().unwrap();
        assert!(
            errors.is_empty(),
            "{page}: JavaScript errors or failed requests: {errors:#?}"
        );
        assert!(
            r["stylesheets"].as_u64().unwrap() >= 5,
            "{page}: the stylesheets load"
        );
        let n = r["diagrams"].as_u64().unwrap();
        assert_eq!(
            r["svg_diagrams"].as_u64().unwrap(),
            n,
            "{page}: every mermaid diagram rendered as SVG"
        );
        diagrams += n;
        if n > 0 {
            let classes = r["theme"].as_str().unwrap_or_default();
            assert!(
                classes.split(' ').any(|c| c == "coal"),
                "{page}: the theme menu switched to Coal (<html class=\"{classes}\">)"
            );
            assert_eq!(
                r["dark_rerendered"], true,
                "{page}: the diagrams follow a switch to a dark theme"
            );
        }
        if page == "reference/routing-table.html"
            && !xtask::preprocess::pages::samples(&book).is_empty()
        {
            // The generated flowchart rendered, naming every upstream the samples reach.
            assert!(n >= 1, "the routing table has its diagram");
            let tree = xtask::extract::assemble(&book, &Default::default()).unwrap();
            let router = xtask::route::Router::from_tree(&tree).unwrap();
            let text = r["svg_text"].as_str().unwrap();
            for s in xtask::preprocess::pages::samples(&book) {
                let client = s
                    .from
                    .as_deref()
                    .unwrap_or(xtask::route::router::DEFAULT_CLIENT);
                if let Some(u) = router.route_from(&s.method, &s.uri, client).upstream {
                    assert!(
                        text.contains(&u),
                        "the routing diagram shows upstream {u}: {text}"
                    );
                }
            }
        }
        if page == "no/such/page.html" {
            assert_eq!(r["status"], 404);
            assert!(r["title"].as_str().unwrap().starts_with("Page not found"));
            continue;
        }
        // The edit link points at this page's Markdown source.
        let ch = book
            .chapters
            .iter()
            .find(|c| html_page(&c.path) == page)
            .unwrap_or_else(|| panic!("{page} is a chapter"));
        let source = template.replace("{path}", &ch.path);
        assert_eq!(
            r["edit_link"].as_str(),
            Some(source.as_str()),
            "{page}: edit link"
        );
        // Every extracted block of this chapter shows its caption.
        {
            let captions: Vec<&str> = r["captions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c.as_str())
                .collect();
            for b in &ch.blocks {
                if let Some(target) = b.target() {
                    assert!(
                        captions.iter().any(|c| c.starts_with(target)),
                        "{page}: caption {target} visible: {captions:?}"
                    );
                }
            }
        }
    }
    assert!(
        diagrams > 0,
        "the book has at least one mermaid diagram, and it rendered"
    );
    // Search works: the index loads and finds a setting the book explains.
    let found = results[0]["search_results"].as_array().map_or(0, Vec::len);
    assert!(
        found > 0,
        "searching for instance_map finds pages: {}",
        results[0]["search_results"]
    );
    for shot in ["introduction.png", "routing-table.png"] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "screenshot {shot} saved ({len} bytes)");
    }
}

/// book.toml names the repository once: `git-repository-url`, from which `cargo xtask book`
/// derives the edit button and the site's path (README, "Publishing a fork"); nothing else in
/// the repository spells them; and every asset it loads exists.
#[test]
fn book_toml_is_consistent() {
    let t: toml::Table = read(&root().join("book.toml")).parse().unwrap();
    let html = t["output"]["html"].as_table().unwrap();
    for derived in ["edit-url-template", "site-url"] {
        assert!(
            !html.contains_key(derived),
            "book.toml sets {derived}: `cargo xtask book` derives it from git-repository-url"
        );
    }
    let repo = site::repository(&root()).unwrap();
    assert_eq!(repo.url, html["git-repository-url"].as_str().unwrap());
    assert_eq!(
        repo.edit_url_template,
        format!("{}/edit/main/{{path}}", repo.url),
        "the edit button edits this repository's main branch"
    );
    let name = repo.url.rsplit('/').next().unwrap();
    assert_eq!(
        repo.site_url,
        format!("/{name}/"),
        "where GitHub Pages serves it"
    );
    // One place: no other tracked text names the repository or the site's path.
    let owner_repo = repo.url.trim_start_matches("https://github.com/");
    let mut stack = vec![
        root().join("src"),
        root().join("xtask"),
        root().join(".github"),
    ];
    let mut files = vec![root().join("README.md"), root().join("versions.toml")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // This test spells what it looks for only through `repo`.
        assert!(
            !text.contains(owner_repo) && !text.contains(&format!("\"{}\"", repo.site_url)),
            "{} names the repository or the site path: book.toml holds them",
            f.display()
        );
    }
    for key in ["additional-css", "additional-js"] {
        for asset in html[key].as_array().unwrap() {
            let p = root().join(asset.as_str().unwrap());
            assert!(p.is_file(), "{key} {} exists", p.display());
        }
    }
    assert!(
        root().join("src/404.md").is_file(),
        "the 404 page has its source"
    );
    let pre = t["preprocessor"]["xtask"].as_table().unwrap();
    let before: Vec<&str> = pre["before"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        before.contains(&"links") && before.contains(&"mermaid"),
        "xtask runs before links and mermaid"
    );
}

/// The preprocessor's command line: mdBook's `supports` probe, usage errors, protocol errors.
#[test]
fn mdbook_subcommand_protocol() {
    use assert_cmd::Command as Cmd;
    let xtask = || Cmd::new(env!("CARGO_BIN_EXE_xtask"));
    for renderer in ["html", "linkcheck2", "markdown"] {
        xtask()
            .args(["mdbook", "supports", renderer])
            .assert()
            .success()
            .stdout("");
    }
    xtask().args(["mdbook", "frobnicate"]).assert().code(2);
    xtask()
        .arg("mdbook")
        .write_stdin("{\"not\": \"an array\"}")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicates::str::contains("mdbook::protocol"));
}
