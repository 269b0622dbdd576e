//! The library's modules depend on each other one way only: no import cycle between the
//! top-level modules (`server` → `store` → …), nor between the modules inside one of
//! them (`streaming::server` → `streaming::websocket` → `streaming::connection`).
//!
//! Read from the source: every `crate::…` and `super::…` path outside a file's
//! `#[cfg(test)]` module is an edge from the file's module to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path below the crate root (`["server", "sandbox_run"]`).
type Module = Vec<String>;

/// Every `.rs` file under `dir`, with its module path.
fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<Module, PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("a src/ entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            modules(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .expect("under src/")
            .with_extension("");
        let mut module: Module = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        if module == ["lib"] || module == ["main"] {
            module.clear();
        }
        out.insert(module, path);
    }
}

/// The source before the first `#[cfg(test)]` module, without `//` comments.
fn production_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_mod = lines
            .peek()
            .is_some_and(|n| n.trim_start().starts_with("mod "));
        if line.trim() == "#[cfg(test)]" && next_is_mod {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        kept.push_str(code);
        kept.push('\n');
    }
    kept
}

/// The source with each `prefix::{a, b::c}` group written out as `prefix::a prefix::b::c`
/// (one level: a nested group keeps its own prefix only).
fn expand_groups(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(at) = rest.find("::{") {
        let before = &rest[..at];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let prefix = &before[start..];
        let Some(close) = rest[at..].find('}') else {
            break;
        };
        let group = &rest[at + 3..at + close];
        out.push_str(&before[..start]);
        for item in group.split(',') {
            let item = item.trim().trim_start_matches('{');
            if !item.is_empty() {
                out.push_str(&format!(" {prefix}::{item} "));
            }
        }
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The module paths a source names, resolved against `module` (the file's own):
/// `crate::a::b`, and `super::x`, which is the parent's `x` (in `a/b.rs`, module
/// `a::b`, and in `a/mod.rs`, module `a`, alike).
fn named_paths(source: &str, module: &Module) -> Vec<Module> {
    let source = expand_groups(source);
    let mut paths = Vec::new();
    let words = source
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains("::"));
    for word in words {
        let parts: Vec<&str> = word.split("::").filter(|p| !p.is_empty()).collect();
        let supers = parts.iter().take_while(|p| **p == "super").count();
        let (mut path, rest): (Module, &[&str]) = if parts.first() == Some(&"crate") {
            (Vec::new(), &parts[1..])
        } else if supers > 0 {
            let keep = module.len().saturating_sub(supers);
            (module[..keep].to_vec(), &parts[supers..])
        } else {
            continue;
        };
        path.extend(rest.iter().map(|p| p.to_string()));
        paths.push(path);
    }
    paths
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &Module, known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains_key(prefix))
}

/// Every edge between two different modules.
fn edges() -> BTreeSet<(Module, Module)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut known = BTreeMap::new();
    modules(&root, &root, &mut known);
    let mut edges = BTreeSet::new();
    for (module, path) in &known {
        for named in named_paths(&production_source(path), module) {
            if let Some(target) = resolve(&named, &known)
                && &target != module
            {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

/// A cycle in `graph`, as the nodes on it, if there is one.
fn cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    // Depth-first, with the nodes of the current path on a stack.
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The graph of `edges` seen at `depth` path segments, for the modules under `within`.
fn graph_at(
    edges: &BTreeSet<(Module, Module)>,
    within: &[String],
    depth: usize,
) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in edges {
        let inside = |m: &Module| m.len() >= depth && m.starts_with(within);
        if !inside(from) || !inside(to) {
            continue;
        }
        let (from, to) = (from[..depth].to_vec(), to[..depth].to_vec());
        if from != to {
            graph.entry(from).or_default().insert(to);
        }
    }
    graph
}

fn show(cycle: &[Module]) -> String {
    let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
    format!("{} → {}", names.join(" → "), names[0])
}

#[test]
fn the_top_level_modules_depend_on_each_other_one_way() {
    let edges = edges();
    assert!(
        edges
            .iter()
            .any(|(from, _)| from == &["server".to_string()]),
        "the graph was read (server names other modules)"
    );
    if let Some(found) = cycle(&graph_at(&edges, &[], 1)) {
        panic!("an import cycle: {}", show(&found));
    }
}

#[test]
fn the_modules_inside_each_module_depend_on_each_other_one_way() {
    let edges = edges();
    let tops: BTreeSet<String> = edges.iter().map(|(from, _)| from[0].clone()).collect();
    for top in tops {
        if let Some(found) = cycle(&graph_at(&edges, std::slice::from_ref(&top), 2)) {
            panic!("an import cycle inside {top}: {}", show(&found));
        }
    }
}

#[test]
fn paths_are_read_from_groups_and_super() {
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let source = "use crate::{error::Result, store::{A, B}};\nuse super::x::Y;\nlet z = crate::clock::now_ns();";
    let found = named_paths(source, &m("server::stats"));
    for wanted in ["error::Result", "store", "server::x::Y", "clock::now_ns"] {
        assert!(found.contains(&m(wanted)), "{wanted} in {found:?}");
    }
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let mut edges = BTreeSet::from([(m("a"), m("b::x")), (m("b::x"), m("c"))]);
    assert_eq!(cycle(&graph_at(&edges, &[], 1)), None);
    edges.insert((m("c::y"), m("a")));
    let found = cycle(&graph_at(&edges, &[], 1)).expect("a → b → c → a");
    assert_eq!(found.len(), 3, "{}", show(&found));
    let inner = BTreeSet::from([(m("s::p"), m("s::q")), (m("s::q::r"), m("s::p"))]);
    assert!(cycle(&graph_at(&inner, &["s".to_string()], 2)).is_some());
}
