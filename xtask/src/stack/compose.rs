//! Reading the extracted `docker-compose.yml` into the few things the native runner needs.
//!
//! The file is parsed with saphyr (aliases resolved by the loader), `<<` merge keys are expanded
//! here (explicit keys win, earlier merge sources win over later ones, as YAML 1.1 says), and
//! `${VAR}` / `${VAR:-default}` / `${VAR-default}` / `${VAR:?msg}` / `$$` are interpolated from
//! the `.env` file next to it, as `docker compose` does. Only the keys the runner honours are
//! read; anything else is ignored.

use anyhow::{Context, bail};
use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed Compose project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding the Compose file (relative bind sources are relative to it).
    pub dir: PathBuf,
    /// Services in file order.
    pub services: Vec<Service>,
    /// Top-level named volumes: name -> is it a tmpfs (`driver_opts: {type: tmpfs}`)?
    pub volumes: BTreeMap<String, bool>,
}

impl Project {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    UnlessStopped,
    /// `on-failure[:max]`
    OnFailure(Option<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path (absolute, already resolved against the project directory).
    Bind(PathBuf),
    /// A named volume of the project.
    Volume(String),
    /// A fresh tmpfs for this service only (`tmpfs:` or `type: tmpfs`).
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// The command as an argv (for `CMD-SHELL`: `["/bin/sh", "-c", text]`).
    pub argv: Vec<String>,
    pub timeout_s: f64,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `env_file` then `environment`, later wins.
    pub env: BTreeMap<String, String>,
    pub depends_on: Vec<(String, Condition)>,
    pub healthcheck: Option<Healthcheck>,
    pub restart: Restart,
    pub mounts: Vec<Mount>,
    /// `user:` (as written, e.g. `991:991`).
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Has `profiles:`: not started by a plain `docker compose up`.
    pub has_profiles: bool,
    /// Published ports: (host address, host port, container port).
    pub ports: Vec<(String, u16, u16)>,
}

/// Reads and interpolates `<dir>/<file>` with `<dir>/.env`.
pub fn load(dir: &Path, file: &str) -> anyhow::Result<Project> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let dotenv = match std::fs::read_to_string(dir.join(".env")) {
        Ok(t) => parse_env_file(&t),
        Err(_) => BTreeMap::new(),
    };
    parse(dir, &text, &dotenv)
}

/// Parses Compose text. `vars` is what `${...}` interpolation sees (the `.env` file).
pub fn parse(dir: &Path, text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<Project> {
    let docs =
        YamlOwned::load_from_str(text).map_err(|e| anyhow::anyhow!("docker-compose.yml: {e}"))?;
    let doc = docs
        .into_iter()
        .next()
        .context("docker-compose.yml is empty")?;
    let mut root = to_json(&doc)?;
    interpolate_value(&mut root, vars)?;
    let Value::Object(root) = root else {
        bail!("docker-compose.yml is not a mapping")
    };

    let mut volumes = BTreeMap::new();
    if let Some(Value::Object(vs)) = root.get("volumes") {
        for (name, spec) in vs {
            let tmpfs = spec
                .get("driver_opts")
                .and_then(|o| o.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| t == "tmpfs");
            volumes.insert(name.clone(), tmpfs);
        }
    }
    let Some(Value::Object(svcs)) = root.get("services") else {
        bail!("docker-compose.yml has no services")
    };
    let mut services = Vec::new();
    for (name, spec) in svcs {
        services.push(service(dir, name, spec).with_context(|| format!("service `{name}`"))?);
    }
    Ok(Project {
        dir: dir.to_path_buf(),
        services,
        volumes,
    })
}

fn service(dir: &Path, name: &str, spec: &Value) -> anyhow::Result<Service> {
    let s = |k: &str| spec.get(k).and_then(Value::as_str).map(String::from);
    let mut env = BTreeMap::new();
    let env_files: Vec<(String, bool)> = match spec.get("env_file") {
        None => vec![],
        Some(Value::String(p)) => vec![(p.clone(), true)],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                Value::String(p) => Some((p.clone(), true)),
                Value::Object(o) => Some((
                    o.get("path")?.as_str()?.to_string(),
                    o.get("required").and_then(Value::as_bool).unwrap_or(true),
                )),
                _ => None,
            })
            .collect(),
        Some(_) => bail!("env_file must be a string or a list"),
    };
    for (p, required) in env_files {
        let path = dir.join(&p);
        match std::fs::read_to_string(&path) {
            Ok(t) => env.extend(parse_env_file(&t)),
            Err(e) if required => bail!("env_file {}: {e}", path.display()),
            Err(_) => {}
        }
    }
    match spec.get("environment") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if let Some(v) = scalar_string(v) {
                    env.insert(k.clone(), v);
                }
            }
        }
        Some(Value::Array(a)) => {
            for item in a.iter().filter_map(Value::as_str) {
                if let Some((k, v)) = item.split_once('=') {
                    env.insert(k.to_string(), v.to_string());
                }
            }
        }
        _ => {}
    }

    let mut depends_on = Vec::new();
    match spec.get("depends_on") {
        Some(Value::Array(a)) => {
            depends_on.extend(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|n| (n.to_string(), Condition::Started)),
            );
        }
        Some(Value::Object(m)) => {
            for (dep, d) in m {
                let cond = match d
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("service_started")
                {
                    "service_started" => Condition::Started,
                    "service_healthy" => Condition::Healthy,
                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                    other => bail!("depends_on {dep}: unknown condition `{other}`"),
                };
                depends_on.push((dep.clone(), cond));
            }
        }
        _ => {}
    }

    let healthcheck = match spec.get("healthcheck") {
        Some(h) if !h.get("disable").and_then(Value::as_bool).unwrap_or(false) => {
            let argv = match h.get("test") {
                Some(Value::String(t)) => Some(vec!["/bin/sh".into(), "-c".into(), t.clone()]),
                Some(Value::Array(a)) => {
                    let parts: Vec<String> = a.iter().filter_map(scalar_string).collect();
                    match parts.first().map(String::as_str) {
                        Some("CMD") => Some(parts[1..].to_vec()),
                        Some("CMD-SHELL") => {
                            Some(vec!["/bin/sh".into(), "-c".into(), parts[1..].join(" ")])
                        }
                        Some("NONE") => None,
                        _ => bail!("healthcheck test must start with CMD, CMD-SHELL or NONE"),
                    }
                }
                _ => None,
            };
            let timeout_s = h
                .get("timeout")
                .and_then(Value::as_str)
                .map_or(Ok(30.0), duration)?;
            argv.map(|argv| Healthcheck { argv, timeout_s })
        }
        _ => None,
    };

    let restart = match s("restart").as_deref() {
        None | Some("no") => Restart::No,
        Some("always") => Restart::Always,
        Some("unless-stopped") => Restart::UnlessStopped,
        Some(r) if r.starts_with("on-failure") => {
            Restart::OnFailure(r.strip_prefix("on-failure:").and_then(|n| n.parse().ok()))
        }
        Some(r) => bail!("restart: unknown policy `{r}`"),
    };

    let mut mounts = Vec::new();
    if let Some(Value::Array(vs)) = spec.get("volumes") {
        for v in vs {
            mounts.push(volume(dir, v)?);
        }
    }
    match spec.get("tmpfs") {
        Some(Value::String(t)) => mounts.push(tmpfs_mount(t)),
        Some(Value::Array(a)) => mounts.extend(a.iter().filter_map(Value::as_str).map(tmpfs_mount)),
        _ => {}
    }

    Ok(Service {
        name: name.to_string(),
        image: s("image").unwrap_or_default(),
        entrypoint: spec.get("entrypoint").map(argv).transpose()?,
        command: spec.get("command").map(argv).transpose()?,
        env,
        depends_on,
        healthcheck,
        restart,
        mounts,
        user: spec.get("user").and_then(scalar_string),
        working_dir: s("working_dir"),
        has_profiles: spec.get("profiles").is_some(),
        ports: match spec.get("ports") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(scalar_string)
                .map(|p| port(&p))
                .collect::<anyhow::Result<_>>()?,
            _ => vec![],
        },
    })
}

/// Short port syntax: `[ADDR:]HOST:CONTAINER[/proto]` or `CONTAINER`.
fn port(p: &str) -> anyhow::Result<(String, u16, u16)> {
    let p = p.split('/').next().unwrap_or(p);
    let parts: Vec<&str> = p.rsplitn(3, ':').collect();
    let num = |s: &str| s.parse::<u16>().with_context(|| format!("bad port `{p}`"));
    Ok(match parts.as_slice() {
        [c] => ("0.0.0.0".into(), num(c)?, num(c)?),
        [c, h] => ("0.0.0.0".into(), num(h)?, num(c)?),
        [c, h, a] => (
            a.trim_matches(|ch| ch == '[' || ch == ']').to_string(),
            num(h)?,
            num(c)?,
        ),
        _ => bail!("bad port `{p}`"),
    })
}

fn tmpfs_mount(t: &str) -> Mount {
    let target = t.split(':').next().unwrap_or(t).to_string();
    Mount {
        source: MountSource::Tmpfs,
        target,
        read_only: false,
    }
}

fn volume(dir: &Path, v: &Value) -> anyhow::Result<Mount> {
    let resolve = |src: &str| -> MountSource {
        if src.starts_with('.') || src.starts_with('/') || src.starts_with('~') {
            let p = Path::new(src);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            };
            MountSource::Bind(normalize(&abs))
        } else {
            MountSource::Volume(src.to_string())
        }
    };
    match v {
        Value::String(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            match parts.as_slice() {
                [target] => Ok(Mount {
                    source: MountSource::Tmpfs,
                    target: (*target).into(),
                    read_only: false,
                })
                .map(|m| Mount {
                    source: MountSource::Volume(format!("anon{}", m.target.replace('/', "_"))),
                    ..m
                }),
                [src, target] => Ok(Mount {
                    source: resolve(src),
                    target: (*target).into(),
                    read_only: false,
                }),
                [src, target, mode] => Ok(Mount {
                    source: resolve(src),
                    target: (*target).into(),
                    read_only: mode.split(',').any(|m| m == "ro"),
                }),
                _ => bail!("cannot read volume `{short}`"),
            }
        }
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("volume");
            let target = o
                .get("target")
                .and_then(Value::as_str)
                .context("volume without target")?
                .to_string();
            let read_only = o.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let src = o.get("source").and_then(Value::as_str).unwrap_or("");
            let source = match ty {
                "bind" => match resolve(src) {
                    MountSource::Volume(v) => MountSource::Bind(dir.join(v)),
                    b => b,
                },
                "volume" => MountSource::Volume(src.to_string()),
                "tmpfs" => MountSource::Tmpfs,
                other => bail!("volume type `{other}` is not supported by the native runner"),
            };
            Ok(Mount {
                source,
                target,
                read_only,
            })
        }
        _ => bail!("cannot read a volume entry"),
    }
}

/// Lexically normalises `a/./b/../c` (no symlink resolution).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn argv(v: &Value) -> anyhow::Result<Vec<String>> {
    match v {
        Value::String(s) => shell_words(s),
        Value::Array(a) => Ok(a.iter().filter_map(scalar_string).collect()),
        Value::Null => Ok(vec![]),
        _ => bail!("command/entrypoint must be a string or a list"),
    }
}

/// Splits a command string as Compose does (POSIX-shell-like quoting, no expansion).
pub fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                has = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => bail!("unterminated ' in `{s}`"),
                    }
                }
            }
            '"' => {
                has = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => bail!("unterminated \" in `{s}`"),
                        },
                        Some(c) => cur.push(c),
                        None => bail!("unterminated \" in `{s}`"),
                    }
                }
            }
            '\\' => {
                has = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                has = true;
                cur.push(c);
            }
        }
    }
    if has {
        out.push(cur);
    }
    Ok(out)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compose durations: `30s`, `1m30s`, `500ms`, `1h`.
pub fn duration(s: &str) -> anyhow::Result<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = num.parse().with_context(|| format!("bad duration `{s}`"))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => bail!("bad duration unit in `{s}`"),
        };
    }
    if !num.is_empty() {
        total += num
            .parse::<f64>()
            .with_context(|| format!("bad duration `{s}`"))?;
    }
    Ok(total)
}

/// `KEY=value` lines; `#` comments and blank lines skipped; surrounding quotes removed.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            out.insert(k.trim().to_string(), v.to_string());
        }
    }
    out
}

/// Compose variable interpolation in one string.
pub fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap_or('?');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
        } else if b.get(i + 1) == Some(&b'{') {
            let end = s[i..]
                .find('}')
                .with_context(|| format!("unterminated ${{ in `{s}`"))?
                + i;
            let inner = &s[i + 2..end];
            let name_end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, rest) = inner.split_at(name_end);
            let val = vars.get(name);
            let v = if let Some(d) = rest.strip_prefix(":-") {
                val.filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| d.to_string())
            } else if let Some(d) = rest.strip_prefix('-') {
                val.cloned().unwrap_or_else(|| d.to_string())
            } else if let Some(m) = rest.strip_prefix(":?").or_else(|| rest.strip_prefix('?')) {
                match val.filter(|v| !v.is_empty() || !rest.starts_with(':')) {
                    Some(v) => v.clone(),
                    None => bail!("required variable {name} is not set: {m}"),
                }
            } else if rest.is_empty() {
                val.cloned().unwrap_or_default()
            } else {
                bail!("unsupported interpolation `${{{inner}}}`")
            };
            out.push_str(&v);
            i = end + 1;
        } else {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j == start {
                out.push('$');
                i += 1;
            } else {
                out.push_str(vars.get(&s[start..j]).map_or("", String::as_str));
                i = j;
            }
        }
    }
    Ok(out)
}

fn interpolate_value(v: &mut Value, vars: &BTreeMap<String, String>) -> anyhow::Result<()> {
    match v {
        Value::String(s) => *s = interpolate(s, vars)?,
        Value::Array(a) => {
            for x in a {
                interpolate_value(x, vars)?;
            }
        }
        Value::Object(m) => {
            for x in m.values_mut() {
                interpolate_value(x, vars)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// saphyr's tree to JSON, expanding `<<` merge keys.
fn to_json(y: &YamlOwned) -> anyhow::Result<Value> {
    Ok(match y {
        YamlOwned::Value(s) => scalar(s),
        YamlOwned::Representation(s, _, _) => Value::String(s.clone()),
        YamlOwned::Sequence(seq) => {
            Value::Array(seq.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        YamlOwned::Mapping(m) => {
            let mut out = Map::new();
            let mut merged: Vec<Map<String, Value>> = Vec::new();
            for (k, v) in m {
                let key = match to_json(k)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                if key == "<<" {
                    match to_json(v)? {
                        Value::Object(o) => merged.push(o),
                        Value::Array(a) => {
                            for item in a {
                                if let Value::Object(o) = item {
                                    merged.push(o);
                                }
                            }
                        }
                        _ => bail!("`<<` must merge a mapping or a list of mappings"),
                    }
                } else {
                    out.insert(key, to_json(v)?);
                }
            }
            for src in merged {
                for (k, v) in src {
                    out.entry(k).or_insert(v);
                }
            }
            Value::Object(out)
        }
        YamlOwned::Tagged(_, inner) => to_json(inner)?,
        YamlOwned::Alias(_) | YamlOwned::BadValue => bail!("unresolvable YAML node (bad alias?)"),
    })
}

fn scalar(s: &ScalarOwned) -> Value {
    match s {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(*b),
        ScalarOwned::Integer(i) => Value::from(*i),
        ScalarOwned::FloatingPoint(f) => {
            serde_json::Number::from_f64(f.0).map_or(Value::Null, Value::Number)
        }
        ScalarOwned::String(s) => Value::String(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = r#"
x-synapse: &synapse
  image: ghcr.io/element-hq/synapse:v1.163.2
  restart: unless-stopped
  env_file: .synapse.env
  volumes:
    - ./synapse:/data:ro
    - sockets:/sockets
  depends_on:
    db: {condition: service_healthy}
services:
  db:
    image: postgres:17-alpine
    environment:
      POSTGRES_USER: synapse
      POSTGRES_PASSWORD: "${PGPW:-fallback}"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h /sockets -U synapse"]
      timeout: 5s
  synapse:
    <<: *synapse
    command: run --config-path=/data/homeserver.yaml
  rooms1:
    <<: *synapse
    restart: "no"
    environment:
      - SYNAPSE_WORKER=synapse.app.generic_worker
    healthcheck:
      test: ["CMD", "curl", "-fsS", "--unix-socket", "/sockets/rooms1_http.sock", "http://localhost/health"]
volumes:
  sockets:
    driver_opts: {type: tmpfs, device: tmpfs}
  pgdata: {}
"#;

    #[test]
    fn merge_keys_interpolation_and_volumes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".synapse.env"), "A=1\n# c\nB='two'\n").unwrap();
        let vars = BTreeMap::from([("PGPW".to_string(), "s3cret".to_string())]);
        let p = parse(dir.path(), COMPOSE, &vars).unwrap();
        assert_eq!(p.services.len(), 3);
        let db = p.service("db").unwrap();
        assert_eq!(db.env["POSTGRES_PASSWORD"], "s3cret");
        assert_eq!(
            db.healthcheck.as_ref().unwrap().argv[2],
            "pg_isready -h /sockets -U synapse"
        );
        assert!((db.healthcheck.as_ref().unwrap().timeout_s - 5.0).abs() < 1e-9);
        let main = p.service("synapse").unwrap();
        assert_eq!(main.restart, Restart::UnlessStopped);
        assert_eq!(
            main.command.as_deref().unwrap(),
            ["run", "--config-path=/data/homeserver.yaml"]
        );
        assert_eq!(main.env["B"], "two");
        assert_eq!(
            main.depends_on,
            vec![("db".to_string(), Condition::Healthy)]
        );
        assert_eq!(
            main.mounts[0].source,
            MountSource::Bind(dir.path().join("synapse"))
        );
        assert!(main.mounts[0].read_only);
        assert_eq!(main.mounts[1].source, MountSource::Volume("sockets".into()));
        let rooms1 = p.service("rooms1").unwrap();
        assert_eq!(
            rooms1.restart,
            Restart::No,
            "explicit keys win over merged ones"
        );
        assert_eq!(rooms1.env["SYNAPSE_WORKER"], "synapse.app.generic_worker");
        assert_eq!(rooms1.env["A"], "1");
        assert_eq!(rooms1.healthcheck.as_ref().unwrap().argv[0], "curl");
        assert_eq!(p.volumes.get("sockets"), Some(&true));
        assert_eq!(p.volumes.get("pgdata"), Some(&false));
        assert_eq!(
            port("127.0.0.1:8008:8008").unwrap(),
            ("127.0.0.1".to_string(), 8008, 8008)
        );
        assert_eq!(
            port("8448:8448/tcp").unwrap(),
            ("0.0.0.0".to_string(), 8448, 8448)
        );
    }

    #[test]
    fn interpolation_forms() {
        let vars = BTreeMap::from([
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]);
        assert_eq!(
            interpolate("$A-${A}-${B:-d}-${E:-d}-${E-d}-$$A", &vars).unwrap(),
            "x-x-d-d--$A"
        );
        assert!(interpolate("${B:?need B}", &vars).is_err());
    }

    #[test]
    fn shell_words_and_durations() {
        assert_eq!(
            shell_words(r#"sh -c "chmod 1777 /sockets && echo 'a b'""#).unwrap(),
            ["sh", "-c", "chmod 1777 /sockets && echo 'a b'"]
        );
        assert!((duration("1m30s").unwrap() - 90.0).abs() < 1e-9);
        assert!((duration("500ms").unwrap() - 0.5).abs() < 1e-9);
    }
}
