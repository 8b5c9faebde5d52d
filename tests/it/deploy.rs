//! The deployment files in `deploy/`: every Kubernetes manifest parses and passes the
//! Kubernetes schema (kubernetes-validate, strict), and the pieces line up: one image,
//! Secrets and keys that exist, volumes that are mounted, claims that exist, `Forbid`
//! concurrency, resources, a non-root user, and every `repo` command line in the CronJobs is
//! accepted by the real binary's argument parser.

use crate::common;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_string()
}

/// Shell words of one command (quotes and `$db`-style variables, as the scripts use them).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out.into_iter().map(|w| w.replace("$db", "x")).collect()
}

/// Every `repo` invocation in a script: the words after `repo` up to `||`, `;` or `|`.
fn repo_commands(script: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in script.lines() {
        let w = words(line.split(" || ").next().unwrap().split(" # ").next().unwrap());
        if let Some(i) = w.iter().position(|x| x == "repo") {
            out.push(w[i + 1..].to_vec());
        }
    }
    out
}

#[test]
fn manifests_pass_the_kubernetes_schema() {
    let tool = std::env::var("REPO_TEST_KUBERNETES_VALIDATE")
        .expect("REPO_TEST_KUBERNETES_VALIDATE (scripts/test.sh installs kubernetes-validate)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 3);
    let o = Command::new(tool).arg("--strict").args(&files).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
}

#[test]
fn cronjobs_line_up_with_secrets_volumes_image_and_the_cli() {
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in docs("secrets.example.yaml") {
        assert_eq!(d["kind"], "Secret");
        let keys = d["stringData"].as_mapping().unwrap().keys().map(str_of).collect();
        secrets.insert(str_of(&d["metadata"]["name"]), keys);
    }
    let claims: BTreeSet<String> = docs("storage.yaml")
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .map(|d| str_of(&d["metadata"]["name"]))
        .collect();
    let jobs = docs("cronjobs.yaml");
    let names: BTreeSet<String> = jobs.iter().map(|j| str_of(&j["metadata"]["name"])).collect();
    for want in [
        "postgres-daily",
        "timescaledb-daily",
        "postgres-hourly-all",
        "offsite-sync",
        "staging-copy",
        "monthly-check",
        "backup-freshness",
    ] {
        assert!(names.contains(want), "missing CronJob {want}: {names:?}");
    }
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    assert!(dockerfile.contains("USER 10001") && dockerfile.contains("ARG PG_MAJOR="));
    // what the build stage copies exists (the image itself is not built here: no engine)
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(root.join(src).exists(), "Dockerfile copies {src}, which is missing");
        }
    }
    let mut images = BTreeSet::new();
    for j in &jobs {
        let name = str_of(&j["metadata"]["name"]);
        assert_eq!(j["kind"], "CronJob");
        assert_eq!(s(j, &["spec", "concurrencyPolicy"]), "Forbid", "{name}");
        let pod = s(j, &["spec", "jobTemplate", "spec", "template", "spec"]);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}: the image's user");
        let volumes: BTreeMap<String, &Value> =
            pod["volumes"].as_sequence().unwrap().iter().map(|v| (str_of(&v["name"]), v)).collect();
        for v in volumes.values() {
            if let Some(sec) = v["secret"]["secretName"].as_str() {
                assert!(secrets.contains_key(sec), "{name}: Secret {sec} is not defined");
            }
            if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(claims.contains(c), "{name}: claim {c} is not defined");
            }
        }
        let containers = pod["containers"].as_sequence().unwrap();
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        images.insert(str_of(&c["image"]));
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(c["resources"][k][r].as_str().is_some(), "{name}: resources.{k}.{r}");
            }
        }
        let mounts: BTreeMap<String, String> = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| (str_of(&m["mountPath"]), str_of(&m["name"])))
            .collect();
        for vol in mounts.values() {
            assert!(volumes.contains_key(vol), "{name}: mount of undefined volume {vol}");
        }
        let mut env = BTreeMap::new();
        for e in c["env"].as_sequence().unwrap() {
            let key = str_of(&e["name"]);
            assert_ne!(key, "HOSTNAME", "{name}: snapshots are grouped by --name, not host");
            let r = &e["valueFrom"]["secretKeyRef"];
            if r.is_mapping() {
                let (sec, k) = (str_of(&r["name"]), str_of(&r["key"]));
                let keys = secrets.get(&sec).unwrap_or_else(|| panic!("{name}: no Secret {sec}"));
                assert!(keys.contains(&k), "{name}: Secret {sec} has no key {k}");
            } else {
                env.insert(key, str_of(&e["value"]));
            }
        }
        // the password files the commands read are mounted from Secrets with a `password` key
        for var in ["REPO_PASSWORD_FILE", "REPO_TO_PASSWORD_FILE"] {
            let Some(file) = env.get(var) else { continue };
            let dir = Path::new(file).parent().unwrap().to_str().unwrap();
            let vol = mounts.get(dir).unwrap_or_else(|| panic!("{name}: {dir} not mounted"));
            let sec = str_of(&volumes[vol]["secret"]["secretName"]);
            assert!(secrets[&sec].contains("password"), "{name}: {sec} has no key password");
        }
        assert!(env.contains_key("REPO_REPOSITORY") && env.contains_key("REPO_PASSWORD_FILE"));
        // every repo command line parses: against a missing repository the binary must stop
        // with "no repository" (exit 10), never with a usage error (exit 2)
        let script = str_of(&c["args"][0]);
        let sh = Command::new("sh").args(["-n", "-c", &script]).output().unwrap();
        assert!(sh.status.success(), "{name}: shell syntax: {script}");
        let commands = repo_commands(&script);
        assert!(!commands.is_empty(), "{name}: no repo command");
        // a job that backs up keeps its cache between runs, on a claim and outside the
        // repository: the resemblance sketches that find bases for moved rows live only there
        if commands.iter().any(|argv| argv.iter().any(|a| a == "backup")) {
            let cache = Path::new(env.get("REPO_CACHE_DIR").expect("REPO_CACHE_DIR"));
            assert!(!cache.starts_with(&env["REPO_REPOSITORY"]), "{name}: cache in the repository");
            let kept = mounts.iter().any(|(dir, vol)| {
                cache.starts_with(dir) && volumes[vol]["persistentVolumeClaim"].is_mapping()
            });
            assert!(kept, "{name}: cache {} is not on a PersistentVolumeClaim", cache.display());
        }
        let missing = tempfile::tempdir().unwrap();
        for argv in commands {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    if a.starts_with('/') {
                        format!("{}{a}", missing.path().display())
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let o = Command::new(common::BIN)
                .args(&argv)
                .env("REPO_REPOSITORY", missing.path().join("repo"))
                .env("REPO_PASSWORD", "x")
                .env("REPO_CACHE_DIR", missing.path().join("cache"))
                .env_remove("REPO_PASSWORD_FILE")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(10), "{name}: repo {argv:?}: {err}");
        }
    }
    assert_eq!(images.len(), 1, "one image for every job: {images:?}");
}

/// Found in an audit: the daily job's `forget --name 'postgres/*'` also matched the hourly
/// `postgres/all` dumps (a glob's `*` crosses `/`) and applied the daily policy to them,
/// removing 22 of the 24 hourly dumps every night. A forget must not select what another
/// job backs up into the same repository, unless a tag tells them apart.
#[test]
fn no_cronjob_forgets_what_another_cronjob_backs_up() {
    // (job, repository, name, tags) of every backup and forget
    let mut backups = Vec::new();
    let mut forgets = Vec::new();
    for j in docs("cronjobs.yaml").iter().filter(|d| d["kind"] == "CronJob") {
        let name = str_of(&j["metadata"]["name"]);
        let c = &s(j, &["spec", "jobTemplate", "spec", "template", "spec", "containers"])[0];
        for argv in repo_commands(&str_of(&c["args"][0])) {
            let opt = |flag: &str| -> Vec<String> {
                let at = argv.iter().enumerate().filter(|(_, a)| *a == flag);
                at.filter_map(|(i, _)| argv.get(i + 1).cloned()).collect()
            };
            let repo = opt("-r").pop().unwrap_or_default();
            let entry = (name.clone(), repo, opt("--name").pop(), opt("--tag"));
            match argv.iter().find(|a| !a.starts_with('-')).map(String::as_str) {
                Some("backup") => backups.push(entry),
                Some("forget") => forgets.push(entry),
                _ => {}
            }
        }
    }
    assert!(!forgets.is_empty() && !backups.is_empty());
    for (fjob, frepo, fname, ftags) in &forgets {
        let glob = fname.as_deref().unwrap_or("*");
        for (bjob, brepo, bname, btags) in &backups {
            let Some(bname) = bname else { continue };
            let theirs = fjob != bjob && frepo == brepo && ::repo::repo::glob_match(glob, bname);
            assert!(
                !theirs || !ftags.iter().all(|t| btags.contains(t)),
                "{fjob}: forget --name {glob} {ftags:?} selects {bname} {btags:?} of {bjob}"
            );
        }
    }
}
