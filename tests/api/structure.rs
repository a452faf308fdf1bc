//! The shape of the code: no module of `src/` imports one that imports it
//! back (directly or through others), so each layer can be read alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = Path::new(first).file_stem().unwrap().to_string_lossy();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let names = found.entry(module.into_owned()).or_default();
            names.extend(named_modules(code));
        }
    }
    for (module, names) in &mut found {
        names.remove(module);
    }
    found
}

/// Every `crate::name` in `code`, including each name of `use crate::{a, b::c}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find(';').unwrap_or(group.len())];
            for part in split_top_level(group) {
                let name = ident(part.trim());
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names
}

/// The comma-separated parts of a `use` group, not splitting nested groups.
fn split_top_level(group: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                parts.push(&group[from..i]);
                return parts;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[from..]);
    parts
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph.contains_key("db") && graph.contains_key("handlers"));
    for start in graph.keys() {
        // Every module reachable from `start`; `start` must not be one.
        let (mut seen, mut todo) = (BTreeSet::new(), vec![start.clone()]);
        while let Some(module) = todo.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                assert_ne!(
                    next, start,
                    "{start} reaches itself again through {module}: {graph:#?}"
                );
                if graph.contains_key(next) && seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
    }
}

#[test]
fn the_domain_knows_nothing_of_http_or_sql() {
    let graph = imports();
    let outer = [
        "db", "error", "handlers", "routes", "server", "config", "cli",
    ];
    for domain in ["account", "email", "password", "keys"] {
        let named = &graph[domain];
        for layer in outer {
            assert!(!named.contains(layer), "{domain} imports {layer}");
        }
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/{domain}.rs")),
        )
        .unwrap();
        for foreign in ["warp", "rusqlite", "hyper"] {
            assert!(
                !text.contains(&format!("{foreign}::")),
                "{domain} uses {foreign}"
            );
        }
    }
}
