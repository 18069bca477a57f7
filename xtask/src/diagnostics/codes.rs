//! The registry of diagnostic codes: every code any command reports, whether it means the input
//! could not be read at all (exit status 2) or is a finding about it, its severity, and one line
//! saying what it means. Exit status and gating read these fields, never the code's text; the
//! contributing page `src/contributing/diagnostics.md` is this table (a test keeps them equal).

/// What a code says about the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The input could not be read at all: exit status 2.
    Input,
    /// Something wrong in what was read: exit status 1 when it is an error.
    Finding,
}

/// How bad a finding of the code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    /// As the external tool rates each finding (its errors are errors, the rest warnings).
    Tool,
}

/// One registered code (or, for [`FAMILIES`], a prefix of codes an external tool names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub name: &'static str,
    pub kind: Kind,
    pub level: Level,
    pub doc: &'static str,
}

const fn input(name: &'static str, doc: &'static str) -> Code {
    Code {
        name,
        kind: Kind::Input,
        level: Level::Error,
        doc,
    }
}

const fn error(name: &'static str, doc: &'static str) -> Code {
    Code {
        name,
        kind: Kind::Finding,
        level: Level::Error,
        doc,
    }
}

const fn warning(name: &'static str, doc: &'static str) -> Code {
    Code {
        name,
        kind: Kind::Finding,
        level: Level::Warning,
        doc,
    }
}

const fn tool(name: &'static str, doc: &'static str) -> Code {
    Code {
        name,
        kind: Kind::Finding,
        level: Level::Tool,
        doc,
    }
}

/// Every code, by area.
pub const CODES: &[Code] = &[
    // The book itself
    input("book::no-book-toml", "`book.toml` cannot be read"),
    input("book::bad-book-toml", "`book.toml` is not valid TOML"),
    input("book::bad-summary", "`SUMMARY.md` cannot be parsed"),
    input("book::unreadable", "a chapter cannot be read"),
    input("book::not-utf8", "a chapter is not UTF-8"),
    error("book::unterminated-fence", "a code fence is never closed"),
    error(
        "book::bad-info-string",
        "a fence's info string breaks the block contract",
    ),
    error(
        "book::unknown-attribute",
        "a fence carries an attribute the contract does not know",
    ),
    error(
        "book::duplicate-attribute",
        "a fence gives an attribute twice",
    ),
    error(
        "book::console-not-runnable",
        "a console block the stack test would run has a line before its first `$ ` command",
    ),
    error(
        "book::unmarked-config-block",
        "a config-language block has neither a `title` nor a marker",
    ),
    warning(
        "book::fence-in-block",
        "a line inside a fenced block looks like a fence mdBook does not take as one",
    ),
    warning(
        "book::indented-code-block",
        "an indented code block: shown, but never extracted nor checked",
    ),
    error(
        "book::include",
        "an mdBook `{{#include}}` (expanded after every check, so never checked)",
    ),
    warning(
        "book::duplicate-chapter",
        "SUMMARY.md lists a chapter twice (read once)",
    ),
    input(
        "mdbook::protocol",
        "mdBook sent the preprocessor something that is not its 0.5 protocol",
    ),
    // Extraction
    input(
        "extract::bad-server-name",
        "`--server-name` is not a valid server name",
    ),
    error(
        "extract::bad-target",
        "a `title` is absolute, climbs out with `..`, or has unsafe characters",
    ),
    error(
        "extract::bad-drop",
        "a variant's `drop` names no main file, or one the variant writes itself",
    ),
    error(
        "extract::target-collision",
        "a target is a file in one place and a directory in another",
    ),
    error(
        "extract::add-without-file",
        "a variant's `add` block adds to a file the main deployment does not have",
    ),
    error(
        "extract::add-and-replace",
        "a variant both replaces a file and adds to it",
    ),
    input(
        "extract::out-not-ours",
        "`--out` holds files extract did not write",
    ),
    error(
        "extract::symlink-escape",
        "a target or the manifest goes through a symbolic link",
    ),
    input(
        "extract::out-over-book",
        "`--out` is the book's directory, holds it, or lies inside its sources",
    ),
    error("extract::io", "writing the tree failed"),
    error(
        "extract::signing-key-unmapped",
        "`signing_key_path` is under no bind mount, so the key has nowhere to go",
    ),
    error(
        "extract::signing-key-in-book",
        "the book writes the signing key file itself",
    ),
    // YAML
    error("yaml::syntax", "a YAML syntax error"),
    error(
        "yaml::too-complex",
        "aliases expand past the node limit (an alias bomb)",
    ),
    error("yaml::duplicate-key", "a mapping repeats a key"),
    error("yaml::unknown-alias", "an alias names no anchor"),
    error(
        "yaml::bad-merge",
        "`<<` is given something other than mappings",
    ),
    error("yaml::tab-indent", "a tab in indentation"),
    error(
        "yaml::yaml11-boolean",
        "a plain `yes`/`no`/`on`/`off`/`y`/`n` that YAML 1.1 and 1.2 read differently",
    ),
    error(
        "yaml::yaml11-octal",
        "a plain leading-zero number that YAML 1.1 reads as octal",
    ),
    // Compose
    error(
        "compose::obsolete-version",
        "the obsolete top-level `version:`",
    ),
    error(
        "compose::unknown-service",
        "`depends_on` names no service of the file",
    ),
    error(
        "compose::dependency-without-healthcheck",
        "`service_healthy` waits for a service without a healthcheck",
    ),
    error(
        "compose::undeclared-volume",
        "a service mounts a named volume the file does not declare",
    ),
    error(
        "compose::missing-bind-source",
        "a read bind mount's source is not in the tree",
    ),
    error(
        "compose::missing-env-file",
        "an `env_file` the book does not write",
    ),
    error(
        "compose::missing-config-file",
        "a config file on a command line that no mount provides",
    ),
    error(
        "compose::healthcheck-socket",
        "a healthcheck probes a socket its own service does not listen on",
    ),
    error(
        "compose::undefined-variable",
        "`${VAR}` without a value in `.env` or a default",
    ),
    error(
        "compose::schema",
        "`docker compose config`: against the Compose specification's schema",
    ),
    error(
        "compose::config",
        "`docker compose config` refuses the file",
    ),
    warning(
        "compose::config-warning",
        "`docker compose config` warns about the file",
    ),
    warning(
        "compose::no-compose",
        "the pinned Docker Compose is missing, so `docker compose config` did not run",
    ),
    // Synapse
    error(
        "synapse::no-worker-name",
        "a worker file has no `worker_name`",
    ),
    error(
        "synapse::reserved-worker-name",
        "a worker is named `main` or `master`",
    ),
    error(
        "synapse::duplicate-worker-name",
        "two worker files share a `worker_name`",
    ),
    error(
        "synapse::worker-without-service",
        "no Compose service starts a worker",
    ),
    error(
        "synapse::unknown-instance",
        "a role key names an instance no worker file defines",
    ),
    error(
        "synapse::unknown-stream",
        "`stream_writers` names a stream Synapse does not know",
    ),
    error("synapse::no-writer", "a stream lists no writer"),
    error(
        "synapse::multiple-writers",
        "a single-writer stream lists several writers",
    ),
    error(
        "synapse::main-not-in-instance-map",
        "there are workers but `instance_map` has no `main`",
    ),
    error(
        "synapse::writer-not-in-instance-map",
        "a stream writer is not in `instance_map`",
    ),
    error(
        "synapse::no-replication-listener",
        "an `instance_map` entry is not a `replication` listener of that process",
    ),
    error("synapse::duplicate-socket", "two listeners bind one socket"),
    error(
        "synapse::media-disabled",
        "a process serves media with the media repository disabled",
    ),
    error(
        "synapse::redis-disabled",
        "there are workers but Redis is not enabled",
    ),
    error(
        "synapse::db-socket-mismatch",
        "Synapse looks for PostgreSQL's socket where PostgreSQL does not put it",
    ),
    error(
        "synapse::redis-socket-mismatch",
        "Synapse looks for Redis's socket where Redis does not listen",
    ),
    error(
        "synapse::missing-log-config",
        "a log config that is not in the tree or not mounted",
    ),
    error(
        "synapse::bad-log-config",
        "a log config without `version: 1`",
    ),
    error(
        "synapse::log-not-on-volume",
        "a log handler writes where no writable volume is mounted",
    ),
    error(
        "synapse::config-error",
        "the pinned Synapse refuses a process's config",
    ),
    warning(
        "synapse::config-not-checked",
        "the pinned Synapse is missing or did not answer, so its config check did not run",
    ),
    // PostgreSQL
    error(
        "postgres::invalid-setting",
        "the installed PostgreSQL rejects a setting of `postgresql.conf`",
    ),
    warning(
        "postgres::not-installed",
        "PostgreSQL is not installed, so `postgresql.conf` was not checked",
    ),
    warning(
        "postgres::not-checked",
        "the PostgreSQL check could not run",
    ),
    error(
        "postgres::config-rejected",
        "a PostgreSQL server refuses to start with a `postgresql.conf` variant",
    ),
    error(
        "sql::query-failed",
        "an `sql` block fails on a live Synapse database",
    ),
    // The reader's own reverse proxy
    error(
        "outer::body-limit",
        "the outer proxy's body limit is below Synapse's `max_upload_size`, or cannot be read",
    ),
    error(
        "outer::upstream",
        "the outer proxy passes requests nowhere, or elsewhere than where Compose publishes nginx",
    ),
    // Prometheus
    error(
        "prometheus::promtool",
        "`promtool check config` rejects the Prometheus configuration or one of its rule files",
    ),
    error(
        "prometheus::missing-target",
        "a Synapse process serves metrics that the Prometheus configuration does not scrape",
    ),
    warning(
        "prometheus::no-promtool",
        "promtool is missing, so the Prometheus configuration was not checked",
    ),
    // Shell
    warning(
        "shell::no-shellcheck",
        "shellcheck is missing or failed, so scripts were not checked",
    ),
    // nginx
    error(
        "nginx::no-config",
        "the book produces no `nginx/nginx.conf`",
    ),
    error("nginx::syntax", "an nginx syntax error"),
    error(
        "nginx::include-missing",
        "an `include` of a file the tree does not have",
    ),
    error(
        "nginx::include-outside",
        "an `include` outside the nginx directory",
    ),
    error(
        "nginx::include-cycle",
        "files include each other, or includes splice in too many files",
    ),
    error(
        "nginx::directive",
        "an unknown directive, or one in the wrong context or with the wrong arguments",
    ),
    error("nginx::no-http", "`nginx.conf` has no `http` block"),
    error("nginx::no-server", "the `http` block has no `server`"),
    error(
        "nginx::bad-location",
        "a `location` that nginx would refuse",
    ),
    error(
        "nginx::duplicate-location",
        "two locations with the same match",
    ),
    error("nginx::bad-regex", "a regex that is not valid PCRE"),
    error("nginx::bad-map", "a `map` nginx would refuse"),
    error(
        "nginx::variable-cycle",
        "a `map` reads itself, directly or through other maps (nginx gives an empty value)",
    ),
    error(
        "nginx::bad-address",
        "an `allow`/`deny` address nginx would refuse",
    ),
    error(
        "nginx::bad-weight",
        "an upstream `weight` nginx would refuse",
    ),
    error("nginx::bad-value", "a value with a malformed variable"),
    error(
        "nginx::undefined-variable",
        "a variable no `map`, `set`, capture or built-in defines",
    ),
    error(
        "nginx::proxy-pass-uri",
        "`proxy_pass` with a URI part (Synapse needs the raw URI)",
    ),
    error(
        "nginx::unknown-upstream",
        "`proxy_pass` names no `upstream`",
    ),
    error(
        "nginx::location-no-action",
        "a location that neither proxies nor returns",
    ),
    error(
        "nginx::server-return-shadows",
        "a server-level `return` makes every location unreachable",
    ),
    error(
        "nginx::unknown-socket",
        "an upstream socket no Synapse listener binds",
    ),
    error(
        "nginx::admin-public",
        "the admin API is reachable from public addresses",
    ),
    error("nginx::weak-tls", "TLS older than 1.2 is enabled"),
    tool(
        "nginx::nginx-t",
        "the real `nginx -t` (its errors are errors, its warnings warnings)",
    ),
    warning("nginx::nginx-t-not-run", "`nginx -t` could not run"),
    error(
        "nginx::gixy",
        "gixy-ng finds a problem in the configuration",
    ),
    error(
        "nginx::gixy-skip",
        "a `# gixy-skip:` comment without a plugin or a reason",
    ),
    warning(
        "nginx::no-gixy",
        "the pinned gixy-ng is not installed, so it did not run",
    ),
    warning("nginx::gixy-not-run", "gixy-ng could not run"),
    // Routing
    error("route::bad-sample", "a `routes` line that does not parse"),
    error(
        "route::mismatch",
        "nginx routes a sample elsewhere than the block says",
    ),
    error(
        "route::contract",
        "a sample lands on a process that cannot serve it",
    ),
    warning(
        "route::not-preferred",
        "a sample lands on a process that serves it, but not the best one",
    ),
    error(
        "route::unknown-socket",
        "a sample goes to a socket no Synapse listener binds",
    ),
    error(
        "route::room-affinity",
        "the requests of one room may reach different processes",
    ),
    error(
        "route::shadowed-location",
        "a location no request seems to reach (every varied path tried, or every sample, goes elsewhere)",
    ),
    error("route::unreached-location", "a location no sample reaches"),
    error(
        "route::no-homeserver",
        "the book has no shared Synapse config to route to",
    ),
    // Security
    error(
        "security::bad-ip-range",
        "an IP range list holds something that is not a range",
    ),
    error(
        "security::ip-blacklist-gap",
        "an outbound IP blacklist misses private ranges",
    ),
    error(
        "security::no-url-preview-blacklist",
        "URL previews are on without their IP blacklist",
    ),
    error(
        "security::placeholder-left",
        "a placeholder survives `extract --secrets generate`",
    ),
    // Links
    error("links::broken", "a link to a page that does not exist"),
    error(
        "links::broken-anchor",
        "a link to a heading that does not exist",
    ),
    // GitHub workflows
    error("workflow::yaml", "a workflow that is not YAML"),
    error(
        "workflow::schema",
        "a workflow against GitHub's workflow schema",
    ),
    error(
        "workflow::expression-syntax",
        "a malformed `${{ }}` expression",
    ),
    error(
        "workflow::unknown-function",
        "an expression calls a function GitHub does not have",
    ),
    error(
        "workflow::undefined-context",
        "an expression names a context that does not exist there",
    ),
    error(
        "workflow::undefined-property",
        "an expression names a property its context does not have",
    ),
    error(
        "workflow::unknown-step",
        "`steps.ID` names no earlier step of the job",
    ),
    error(
        "workflow::unknown-need",
        "`needs.ID` names a job the job does not need",
    ),
    error("zizmor::failed", "zizmor could not run"),
    // The stack test (raised as errors located in the book)
    error(
        "stack::compose",
        "`docker compose config` refuses the extracted tree",
    ),
    error("stack::no-image", "a service names no image"),
    error(
        "stack::no-dockerfile",
        "a service builds an image from a Dockerfile the tree does not have",
    ),
    error(
        "stack::dockerfile",
        "a Dockerfile the book builds has no stand-in recipe (only `FROM` an image with a stand-in and `RUN apk add`)",
    ),
    error("stack::not-healthy", "a service does not become healthy"),
];

/// Codes named by external tools: the prefix, then the tool's own code.
pub const FAMILIES: &[Code] = &[
    tool(
        "shell::SC",
        "a shellcheck finding, `shell::SC<number>` (its errors and warnings are errors, info and style warnings)",
    ),
    error(
        "zizmor::",
        "a zizmor finding on a workflow, `zizmor::<audit>`",
    ),
];

/// The registry entry of a code: an exact code, else the family it starts with.
pub fn lookup(code: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.name == code).or_else(|| {
        FAMILIES.iter().find(|f| {
            code.strip_prefix(f.name)
                .is_some_and(|rest| !rest.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_well_formed_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CODES.iter().chain(FAMILIES) {
            assert!(seen.insert(c.name), "{} is registered twice", c.name);
            let (area, _) = c.name.split_once("::").expect("area::name");
            assert!(!area.is_empty() && !c.doc.is_empty(), "{c:?}");
        }
        for c in CODES {
            let (_, name) = c.name.split_once("::").unwrap();
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} is not <area>::<kebab-name>",
                c.name
            );
        }
        assert_eq!(lookup("shell::SC2086").map(|c| c.name), Some("shell::SC"));
        assert_eq!(lookup("shell::SC"), None);
        assert_eq!(lookup("yaml::syntax").map(|c| c.kind), Some(Kind::Finding));
        assert_eq!(lookup("book::not-utf8").map(|c| c.kind), Some(Kind::Input));
        assert!(lookup("no::such-code").is_none());
    }
}
