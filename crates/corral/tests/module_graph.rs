//! The modules of each crate form layers: no two top-level modules of one crate use each
//! other, directly or around a longer cycle. A cycle means neither can be read, tested or
//! moved on its own; this test names it, with the files that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module name → the top-level modules it uses (with one file that does).
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (name != "lib" && name != "main").then(|| name.to_string())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(from) = module_of(f) else { continue };
        let text = code(&std::fs::read_to_string(f).unwrap());
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` imports.
            let names: Vec<String> = if rest.starts_with('{') {
                let end = rest.find('}').unwrap_or(rest.len());
                rest[1..end]
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect()
                    })
                    .collect()
            } else {
                vec![name]
            };
            for to in names {
                if to != from && modules.contains(&to) {
                    g.entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| f.clone());
                }
            }
        }
    }
    g
}

/// Every cycle, as the path of modules that closes it.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in g.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in g.get(&at).into_iter().flat_map(|m| m.keys()) {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    // Each cycle once: the one starting from its smallest module.
                    if path.iter().all(|m| m >= start) {
                        found.push(cycle);
                    }
                } else if !path.contains(next) && path.len() < 6 {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Cycles tolerated for now (none): a cycle not listed here fails the test; so does a
/// listed one that is gone.
const KNOWN: &[&str] = &[];

#[test]
fn no_crate_has_a_cycle_between_its_modules() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    let mut seen: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = e.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let g = graph(&src);
        for cycle in cycles(&g) {
            let line = format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                cycle.join(" -> ")
            );
            seen.push(line.clone());
            if KNOWN.contains(&line.as_str()) {
                continue;
            }
            report.push_str(&format!("{line}\n"));
            for pair in cycle.windows(2) {
                report.push_str(&format!(
                    "    {} uses {} in {}\n",
                    pair[0],
                    pair[1],
                    g[&pair[0]][&pair[1]].display()
                ));
            }
        }
    }
    assert!(report.is_empty(), "module cycles:\n{report}");
    let gone: Vec<&&str> = KNOWN
        .iter()
        .filter(|k| !seen.iter().any(|s| s == *k))
        .collect();
    assert!(gone.is_empty(), "untangled, take them off KNOWN: {gone:?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), PathBuf::from(format!("{a}.rs")));
    }
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c", "a"]]);
}
