//! Architecture rules over the workspace's product crates, checked from the
//! source tree alone (no build of the crates, no network, no root):
//!
//! 1. No circle between the files of one crate: a file may refer to items
//!    defined in another file of its crate only if that file does not, directly
//!    or through other files, refer back. A circle means neither file can be
//!    understood, tested or moved without the other.
//! 2. No crate is more than about a third of the code (36 % of the non-blank
//!    lines of every product crate's `src/**/*.rs`).
//!
//! The crates are the members of the root `Cargo.toml` `[workspace]`, except
//! `tests` (this crate: shared support for the integration tests) and `bench`
//! (the benchmark harness and its input generators): neither is product code,
//! so neither is measured nor checked for circles.
//!
//! The reference finder is a small hand-written scanner, not a Rust parser:
//! see [`Crate::scan`] for what it resolves and what it does not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Workspace members that are not product code (see the crate docs).
const NOT_PRODUCT: &[&str] = &["tests", "bench"];

/// The largest share of the product code one crate may hold.
const MAX_SHARE: f64 = 0.36;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// The `members` of the `[workspace]` table of the root `Cargo.toml`, as
/// written (directories relative to the root); a trailing `/*` is expanded.
fn workspace_members(root: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("read the root Cargo.toml");
    let mut in_workspace = false;
    let mut list = None;
    let mut lines = manifest.lines();
    while let Some(line) = lines.next() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_workspace = line == "[workspace]";
            continue;
        }
        if !in_workspace {
            continue;
        }
        if let Some(rest) = line.strip_prefix("members") {
            let mut text = rest.trim_start().trim_start_matches('=').to_string();
            while !text.contains(']') {
                let Some(next) = lines.next() else { break };
                text.push_str(next.split('#').next().unwrap_or(""));
            }
            list = Some(text);
            break;
        }
    }
    let list = list.expect("the root Cargo.toml has `[workspace] members = [...]`");
    let mut members = Vec::new();
    for quoted in list.split('"').skip(1).step_by(2) {
        if let Some(dir) = quoted.strip_suffix("/*") {
            let mut found: Vec<String> = fs::read_dir(root.join(dir))
                .expect("list a member glob")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                .collect();
            found.sort();
            members.extend(found);
        } else {
            members.push(quoted.to_string());
        }
    }
    assert!(!members.is_empty(), "no workspace members found in {list}");
    members
}

fn product_crates(root: &Path) -> Vec<String> {
    workspace_members(root)
        .into_iter()
        .filter(|m| !NOT_PRODUCT.contains(&m.as_str()))
        .collect()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Lexing: comments and literals out, then identifiers, `::` and punctuation.
// ---------------------------------------------------------------------------

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with every comment (doc comments too), string literal (plain, byte,
/// C, raw with any number of `#`) and character literal blanked out: each of
/// their characters becomes a space, newlines stay, so line numbers hold.
/// Lifetimes and labels (`'a`) are kept.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, from: usize, to: usize| {
        for &ch in &c[from..to.min(n)] {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    // The end (exclusive) of a quoted literal whose opening quote is at `i`.
    let quoted_end = |i: usize, quote: char| {
        let mut j = i + 1;
        while j < n && c[j] != quote {
            j += if c[j] == '\\' { 2 } else { 1 };
        }
        j + 1
    };
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch == '/' && at(i + 1) == '/' {
            let mut j = i;
            while j < n && c[j] != '\n' {
                j += 1;
            }
            blank(&mut out, i, j);
            i = j;
        } else if ch == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i + 2, 1);
            while j < n && depth > 0 {
                if c[j] == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if is_ident_start(ch) && (i == 0 || !is_ident_char(c[i - 1])) {
            let mut j = i;
            while j < n && is_ident_char(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let mut hashes = j;
            while at(hashes) == '#' {
                hashes += 1;
            }
            if matches!(word.as_str(), "r" | "br" | "cr") && at(hashes) == '"' {
                // Raw string: ends at `"` followed by as many `#`.
                let count = hashes - j;
                let mut k = hashes + 1;
                while k < n && !(c[k] == '"' && (1..=count).all(|h| at(k + h) == '#')) {
                    k += 1;
                }
                let end = k + 1 + count;
                blank(&mut out, i, end);
                i = end;
            } else if matches!(word.as_str(), "b" | "c") && at(j) == '"' {
                let end = quoted_end(j, '"');
                blank(&mut out, i, end);
                i = end;
            } else if word == "b" && at(j) == '\'' {
                let end = quoted_end(j, '\'');
                blank(&mut out, i, end);
                i = end;
            } else {
                out.push_str(&word);
                i = j;
            }
        } else if ch == '"' {
            let end = quoted_end(i, '"');
            blank(&mut out, i, end);
            i = end;
        } else if ch == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal; otherwise it is a lifetime or a label.
            let end = if at(i + 1) == '\\' {
                let mut j = i + 3;
                while j < n && c[j] != '\'' {
                    j += 1;
                }
                j + 1
            } else {
                i + 3
            };
            blank(&mut out, i, end);
            i = end;
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

impl Token {
    fn is_ident(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Ident(i) if i == s)
    }
    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(i) => Some(i),
            _ => None,
        }
    }
    fn is(&self, p: char) -> bool {
        self.tok == Tok::Punct(p)
    }
}

fn tokenize(stripped: &str) -> Vec<Token> {
    let c: Vec<char> = stripped.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let mut j = i;
            while j < c.len() && is_ident_char(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            if is_ident_start(ch) {
                toks.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            } else {
                toks.push(Token {
                    tok: Tok::Punct('0'),
                    line,
                }); // a number
            }
            i = j;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            toks.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    toks
}

/// The index just past the bracketed group opening at `i` (`(`, `[`, `{`).
fn skip_group(toks: &[Token], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < toks.len() {
        match toks[j].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    toks.len()
}

/// Drops every item under `#[cfg(test)]` (the `mod tests { ... }` blocks, but
/// also test-only functions and `mod tests;` declarations: tests may use
/// anything) and under `#[cfg(doc)]` (imports kept only for doc links, and
/// doc comments are not references either).
fn drop_test_items(toks: Vec<Token>) -> Vec<Token> {
    let is_cfg_test = |i: usize| {
        toks.len() > i + 6
            && toks[i].is('#')
            && toks[i + 1].is('[')
            && toks[i + 2].is_ident("cfg")
            && toks[i + 3].is('(')
            && (toks[i + 4].is_ident("test") || toks[i + 4].is_ident("doc"))
            && toks[i + 5].is(')')
            && toks[i + 6].is(']')
    };
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if !is_cfg_test(i) {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // Further attributes of the same item.
        while i + 1 < toks.len() && toks[i].is('#') && toks[i + 1].is('[') {
            i = skip_group(&toks, i + 1);
        }
        // The item: up to a `;` outside brackets, or to the end of its block.
        let mut depth = 0i32;
        while i < toks.len() {
            match toks[i].tok {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']') => depth -= 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// One file: its module declarations, items, imports and references.
// ---------------------------------------------------------------------------

/// One leaf of a `use` tree: `use a::{b, c::D as E, f::*}` has three.
#[derive(Debug, Clone)]
struct UseLeaf {
    /// The full path, `self` leaves already folded (`a::{self}` is `a`).
    path: Vec<String>,
    /// The name it brings into scope; `None` for a glob.
    alias: Option<String>,
    line: usize,
}

fn parse_use_tree(toks: &[Token], pos: &mut usize, prefix: &[String], out: &mut Vec<UseLeaf>) {
    let mut path = prefix.to_vec();
    if toks.get(*pos).is_some_and(|t| t.tok == Tok::Sep) {
        *pos += 1;
    }
    while let Some(t) = toks.get(*pos) {
        match &t.tok {
            Tok::Ident(name) => {
                path.push(name.clone());
                let line = t.line;
                *pos += 1;
                if toks.get(*pos).is_some_and(|t| t.tok == Tok::Sep) {
                    *pos += 1;
                    continue;
                }
                if path.last().is_some_and(|s| s == "self") && path.len() > 1 {
                    path.pop();
                }
                let mut alias = path.last().cloned();
                if toks.get(*pos).is_some_and(|t| t.is_ident("as")) {
                    alias = toks
                        .get(*pos + 1)
                        .and_then(|t| t.ident())
                        .map(str::to_string);
                    *pos += 2;
                }
                out.push(UseLeaf { path, alias, line });
                return;
            }
            Tok::Punct('*') => {
                out.push(UseLeaf {
                    path,
                    alias: None,
                    line: t.line,
                });
                *pos += 1;
                return;
            }
            Tok::Punct('{') => {
                *pos += 1;
                while let Some(t) = toks.get(*pos) {
                    if t.is('}') {
                        *pos += 1;
                        return;
                    }
                    let before = *pos;
                    parse_use_tree(toks, pos, &path, out);
                    if toks.get(*pos).is_some_and(|t| t.is(',')) {
                        *pos += 1;
                    }
                    if *pos == before {
                        *pos += 1; // malformed: never loop forever
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

/// A path in the code (a non-`pub` `use` leaf, or a path written inline)
/// that may name an item of another file.
#[derive(Debug, Clone)]
struct Ref {
    path: Vec<String>,
    line: usize,
    /// How many inline modules (`mod x { ... }`) of the file the path sits in:
    /// that many leading `super`s stay in the file.
    inline_depth: usize,
}

#[derive(Debug, Default)]
struct FileScan {
    /// `mod x;` declarations: modules in files of their own.
    mods: Vec<String>,
    /// Names of the items defined at the file's top level (inline modules
    /// included: what they hold is in this file as well).
    items: BTreeSet<String>,
    /// The `use` leaves outside inline modules (`pub` or not): what the
    /// module's name lookups (and re-exports) can go through.
    imports: Vec<UseLeaf>,
    refs: Vec<Ref>,
}

const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

fn scan_file(src: &str) -> FileScan {
    let toks = drop_test_items(tokenize(&strip(src)));
    let mut scan = FileScan::default();
    let mut depth = 0usize;
    // Brace depths at which the open inline modules started.
    let mut inline: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Ident(word) if word == "use" => {
                let is_pub = i > 0 && {
                    let mut k = i - 1;
                    if toks[k].is(')') {
                        while k > 0 && !toks[k].is('(') {
                            k -= 1;
                        }
                        k = k.saturating_sub(1);
                    }
                    toks[k].is_ident("pub")
                };
                let mut pos = i + 1;
                let mut leaves = Vec::new();
                parse_use_tree(&toks, &mut pos, &[], &mut leaves);
                while pos < toks.len() && !toks[pos].is(';') {
                    pos += 1;
                }
                for leaf in leaves {
                    if !is_pub {
                        scan.refs.push(Ref {
                            path: leaf.path.clone(),
                            line: leaf.line,
                            inline_depth: inline.len(),
                        });
                    }
                    if inline.is_empty() {
                        scan.imports.push(leaf);
                    }
                }
                i = pos + 1;
            }
            Tok::Ident(word) if word == "mod" => {
                let name = toks.get(i + 1).and_then(|t| t.ident()).map(str::to_string);
                let next = toks.get(i + 2);
                if let Some(name) = name {
                    if next.is_some_and(|t| t.is(';')) {
                        if inline.is_empty() && depth == 0 {
                            scan.mods.push(name);
                        }
                    } else if next.is_some_and(|t| t.is('{')) {
                        if depth == 0 {
                            scan.items.insert(name);
                        }
                        inline.push(depth);
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
                i += 2;
            }
            Tok::Ident(word) if depth == 0 && ITEM_KEYWORDS.contains(&word.as_str()) => {
                let mut k = i + 1;
                if toks.get(k).is_some_and(|t| t.is_ident("mut")) {
                    k += 1;
                }
                if let Some(name) = toks.get(k).and_then(|t| t.ident()) {
                    if !ITEM_KEYWORDS.contains(&name)
                        && !matches!(name, "unsafe" | "async" | "extern")
                    {
                        scan.items.insert(name.to_string());
                    }
                }
                i += 1;
            }
            Tok::Ident(word)
                if depth == 0
                    && word == "macro_rules"
                    && toks.get(i + 1).is_some_and(|t| t.is('!')) =>
            {
                if let Some(name) = toks.get(i + 2).and_then(|t| t.ident()) {
                    scan.items.insert(name.to_string());
                }
                i += 3;
            }
            Tok::Ident(first) => {
                // An inline path: `a::b::c`, not in the middle of another one.
                let starts = i == 0 || toks[i - 1].tok != Tok::Sep;
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while j + 1 < toks.len() && toks[j].tok == Tok::Sep {
                    match toks[j + 1].ident() {
                        Some(seg) => {
                            path.push(seg.to_string());
                            j += 2;
                        }
                        None => break,
                    }
                }
                if starts && path.len() > 1 {
                    scan.refs.push(Ref {
                        path,
                        line: t.line,
                        inline_depth: inline.len(),
                    });
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    scan
}

// ---------------------------------------------------------------------------
// One crate: its module tree, and the file graph.
// ---------------------------------------------------------------------------

struct Module {
    /// Index into `Crate::files`.
    file: usize,
    parent: Option<usize>,
    root: usize,
    children: BTreeMap<String, usize>,
}

/// One edge's example: where the first reference from one file to the other
/// is, and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Example {
    line: usize,
    path: String,
}

struct Crate {
    /// Files reached from a crate root, relative to `src/` (`native/mod.rs`).
    files: Vec<String>,
    scans: Vec<FileScan>,
    modules: Vec<Module>,
    /// `(from, to)` file indices, with the first reference (by line).
    edges: BTreeMap<(usize, usize), Example>,
}

/// Resolution gives up after this many steps (re-export chains, globs).
const FUEL: usize = 32;

impl Crate {
    /// Reads the crate whose sources are in `src`: every crate root there
    /// (`lib.rs`, `main.rs`, `bin/*.rs`, `bin/*/main.rs`) and the file modules
    /// they declare, then resolves every reference to the file that defines
    /// what it names.
    ///
    /// Resolved: paths starting with `crate`, `self`, `super` (any number),
    /// a child module, an item of the module or a name a `use` brought in
    /// (uniform paths), in `use` lines (groups, `self`, `as`, globs) and
    /// inline in code; walking through file modules (`a.rs`, `a/mod.rs`,
    /// and `a/b.rs` under a non-`mod.rs` file), then to the file that defines
    /// the item, following `use`/`pub use` re-exports and globs. A name not
    /// found in a module of the crate resolves to that module's file.
    ///
    /// Not resolved: method calls and fields (`store.put()` where `impl Store`
    /// is in another file: the scanner has no types), macro-generated items,
    /// `#[path]` attributes, paths inside string literals (attributes like
    /// `#[serde(with = "...")]`), and names imported inside an inline module
    /// as seen from outside it.
    fn scan(src: &Path) -> Crate {
        let mut c = Crate {
            files: Vec::new(),
            scans: Vec::new(),
            modules: Vec::new(),
            edges: BTreeMap::new(),
        };
        let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
            .iter()
            .map(|r| src.join(r))
            .filter(|p| p.is_file())
            .collect();
        if let Ok(entries) = fs::read_dir(src.join("bin")) {
            let mut bins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .map(|p| if p.is_dir() { p.join("main.rs") } else { p })
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs"))
                .collect();
            bins.sort();
            roots.extend(bins);
        }
        for root in roots {
            let id = c.modules.len();
            c.load(src, &root, None, id, true);
        }
        c.resolve_edges();
        c
    }

    fn file_index(&mut self, src: &Path, path: &Path) -> usize {
        let rel = path
            .strip_prefix(src)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        if let Some(i) = self.files.iter().position(|f| *f == rel) {
            return i;
        }
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        self.files.push(rel);
        self.scans.push(scan_file(&text));
        self.files.len() - 1
    }

    fn load(
        &mut self,
        src: &Path,
        path: &Path,
        parent: Option<usize>,
        root: usize,
        is_root: bool,
    ) -> usize {
        let file = self.file_index(src, path);
        let id = self.modules.len();
        self.modules.push(Module {
            file,
            parent,
            root,
            children: BTreeMap::new(),
        });
        let owns_dir = is_root || path.file_name().is_some_and(|n| n == "mod.rs");
        let dir = if owns_dir {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for name in self.scans[file].mods.clone() {
            let candidates = [
                dir.join(format!("{name}.rs")),
                dir.join(&name).join("mod.rs"),
            ];
            if let Some(child_path) = candidates.iter().find(|p| p.is_file()) {
                let child = self.load(src, child_path, Some(id), root, false);
                self.modules[id].children.insert(name, child);
            }
        }
        id
    }

    /// The file defining what `path`, written in module `m`, names; `None`
    /// for what is outside the crate (std, other crates, generics, `Self`).
    fn resolve(&self, m: usize, path: &[String]) -> Option<usize> {
        self.walk(m, path, FUEL, true).map(|(file, _)| file)
    }

    /// Walks `path` from module `m`: `Some((file, exact))`, where `exact` is
    /// false when a name was not found in a module of the crate (a
    /// macro-generated item, say) and that module's file stands in; `None`
    /// when the path leaves the crate. `relative`: `path[0]` is the first
    /// name of a path written in `m`, and unknown there means outside.
    fn walk(
        &self,
        m: usize,
        path: &[String],
        fuel: usize,
        relative: bool,
    ) -> Option<(usize, bool)> {
        let module = &self.modules[m];
        let Some((name, rest)) = path.split_first() else {
            return Some((module.file, true));
        };
        if fuel == 0 {
            return None; // an import loop: give up rather than guess
        }
        match name.as_str() {
            "crate" => return self.walk(module.root, rest, fuel - 1, false),
            "self" => return self.walk(m, rest, fuel - 1, false),
            "super" => return self.walk(module.parent?, rest, fuel - 1, false),
            _ => {}
        }
        if let Some(&child) = module.children.get(name) {
            return self.walk(child, rest, fuel - 1, false);
        }
        let scan = &self.scans[module.file];
        if scan.items.contains(name) {
            return Some((module.file, true));
        }
        // A name a `use` brought in (`use anyhow::anyhow` names the crate
        // `anyhow` by its first segment, not itself).
        if let Some(leaf) = scan
            .imports
            .iter()
            .find(|l| l.alias.as_deref() == Some(name.as_str()) && l.path[0] != *name)
        {
            let mut full = leaf.path.clone();
            full.extend(rest.iter().cloned());
            return self.walk(m, &full, fuel - 1, true);
        }
        for leaf in scan.imports.iter().filter(|l| l.alias.is_none()) {
            let mut full = leaf.path.clone();
            full.extend(path.iter().cloned());
            if let Some((file, true)) = self.walk(m, &full, fuel - 1, true) {
                return Some((file, true));
            }
        }
        if relative {
            None
        } else {
            Some((module.file, false))
        }
    }

    fn resolve_edges(&mut self) {
        let mut edges: BTreeMap<(usize, usize), Example> = BTreeMap::new();
        for m in 0..self.modules.len() {
            let from = self.modules[m].file;
            for r in &self.scans[from].refs {
                // Leading `super`s inside inline modules stay in the file.
                let mut path: &[String] = &r.path;
                let mut levels = r.inline_depth;
                while levels > 0 && path.first().is_some_and(|s| s == "super") {
                    path = &path[1..];
                    levels -= 1;
                }
                if path.is_empty()
                    || (r.inline_depth > 0 && levels == r.inline_depth && path[0] == "self")
                {
                    continue; // the inline module itself: this file
                }
                let mut path = path.to_vec();
                if path.len() < r.path.len() {
                    path.insert(0, "self".to_string());
                }
                let Some(to) = self.resolve(m, &path) else {
                    continue;
                };
                if to == from {
                    continue;
                }
                let example = Example {
                    line: r.line,
                    path: r.path.join("::"),
                };
                edges
                    .entry((from, to))
                    .and_modify(|e| {
                        if example.line < e.line {
                            *e = example.clone();
                        }
                    })
                    .or_insert(example);
            }
        }
        self.edges = edges;
    }

    /// The edges as file names, for tests and messages.
    fn edge_names(&self) -> BTreeSet<(String, String)> {
        self.edges
            .keys()
            .map(|&(a, b)| (self.files[a].clone(), self.files[b].clone()))
            .collect()
    }

    /// Strongly connected components of more than one file, each sorted.
    fn components(&self) -> Vec<Vec<usize>> {
        let n = self.files.len();
        let mut succ = vec![Vec::new(); n];
        for &(a, b) in self.edges.keys() {
            succ[a].push(b);
        }
        // Tarjan's algorithm.
        struct State {
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(v: usize, succ: &[Vec<usize>], s: &mut State) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on_stack[v] = true;
            for &w in &succ[v] {
                match s.index[w] {
                    None => {
                        visit(w, succ, s);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = s.stack.pop().unwrap();
                    s.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    s.out.push(comp);
                }
            }
        }
        let mut s = State {
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if s.index[v].is_none() {
                visit(v, &succ, &mut s);
            }
        }
        let mut out = s.out;
        for comp in &mut out {
            comp.sort_by(|&a, &b| self.files[a].cmp(&self.files[b]));
        }
        out.sort_by(|a, b| self.files[a[0]].cmp(&self.files[b[0]]));
        out
    }

    /// Shortest path from `from` to `to` inside `within`.
    fn shortest(&self, from: usize, to: usize, within: &BTreeSet<usize>) -> Vec<usize> {
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(v) = queue.pop_front() {
            if v == to && v != from {
                break;
            }
            for (&(a, b), _) in self.edges.range((v, 0)..=(v, usize::MAX)) {
                debug_assert_eq!(a, v);
                if within.contains(&b) && (b == to || seen.insert(b)) {
                    prev.entry(b).or_insert(v);
                    if b == to {
                        queue.clear();
                        break;
                    }
                    queue.push_back(b);
                }
            }
        }
        let mut path = vec![to];
        let mut v = to;
        while let Some(&p) = prev.get(&v) {
            path.push(p);
            if p == from {
                break;
            }
            v = p;
        }
        path.reverse();
        path
    }

    /// Each circle as `crate: a.rs -> b.rs -> a.rs`: a closed walk through
    /// every file of the component, each step with its example reference,
    /// then the component's other edges (all of them must go, or enough to
    /// open every circle).
    fn circles(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for comp in self.components() {
            let within: BTreeSet<usize> = comp.iter().copied().collect();
            let start = comp[0];
            let mut walk = vec![start];
            let mut visited = BTreeSet::from([start]);
            let mut at = start;
            while visited.len() < comp.len() {
                // The nearest file not yet visited.
                let best = comp
                    .iter()
                    .filter(|v| !visited.contains(v))
                    .map(|&v| self.shortest(at, v, &within))
                    .min_by_key(|p| p.len())
                    .unwrap();
                for &v in &best[1..] {
                    visited.insert(v);
                    walk.push(v);
                }
                at = *walk.last().unwrap();
            }
            walk.extend(self.shortest(at, start, &within).into_iter().skip(1));
            let names: Vec<&str> = walk.iter().map(|&f| self.files[f].as_str()).collect();
            let mut text = format!("{name}: {}", names.join(" -> "));
            let mut used = BTreeSet::new();
            for step in walk.windows(2) {
                let (a, b) = (step[0], step[1]);
                used.insert((a, b));
                let e = &self.edges[&(a, b)];
                let _ = write!(
                    text,
                    "\n    {}:{} -> {}: `{}`",
                    self.files[a], e.line, self.files[b], e.path
                );
            }
            for (&(a, b), e) in &self.edges {
                if within.contains(&a) && within.contains(&b) && !used.contains(&(a, b)) {
                    let _ = write!(
                        text,
                        "\n    (also) {}:{} -> {}: `{}`",
                        self.files[a], e.line, self.files[b], e.path
                    );
                }
            }
            out.push(text);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------

#[test]
fn no_circle_between_files_inside_a_crate() {
    let root = workspace_root();
    let mut circles = Vec::new();
    for name in product_crates(&root) {
        let src = root.join(&name).join("src");
        assert!(src.is_dir(), "member `{name}` has no src/");
        let c = Crate::scan(&src);
        assert!(
            !c.files.is_empty(),
            "member `{name}`: no crate root in {}",
            src.display()
        );
        circles.extend(c.circles(&name));
    }
    assert!(
        circles.is_empty(),
        "{} circle(s) between files inside a crate; each line below is one reference \
         (file:line -> file it needs: path as written). Break every circle: move the item \
         both sides need into a file of its own, or make one side stop referring to the other.\n\n{}\n",
        circles.len(),
        circles.join("\n\n")
    );
}

fn non_blank_lines(dir: &Path) -> usize {
    rust_files(dir)
        .iter()
        .map(|f| {
            let text =
                fs::read_to_string(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            text.lines().filter(|l| !l.trim().is_empty()).count()
        })
        .sum()
}

#[test]
fn no_crate_is_more_than_a_third_of_the_code() {
    let root = workspace_root();
    let sizes: Vec<(String, usize)> = product_crates(&root)
        .into_iter()
        .map(|name| {
            let lines = non_blank_lines(&root.join(&name).join("src"));
            (name, lines)
        })
        .collect();
    let total: usize = sizes.iter().map(|(_, l)| l).sum();
    assert!(total > 0, "no product code found");
    let share = |lines: usize| lines as f64 / total as f64;
    let mut table = format!("{:<12} {:>7} {:>7}\n", "crate", "lines", "share");
    let mut sorted = sizes.clone();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, lines) in &sorted {
        let _ = writeln!(
            table,
            "{name:<12} {lines:>7} {:>6.1}%",
            100.0 * share(*lines)
        );
    }
    let _ = writeln!(table, "{:<12} {total:>7} {:>6.1}%", "total", 100.0);
    println!("non-blank lines of src/**/*.rs per product crate:\n{table}");
    let too_big: Vec<String> = sorted
        .iter()
        .filter(|(_, lines)| share(*lines) > MAX_SHARE)
        .map(|(name, lines)| {
            format!(
                "crate `{name}` has {lines} of the {total} non-blank lines of product code: {:.1}% (at most {:.0}%)",
                100.0 * share(*lines),
                100.0 * MAX_SHARE
            )
        })
        .collect();
    assert!(
        too_big.is_empty(),
        "{}\nsplit it: move a part with its own purpose into a crate of its own.\n\n{table}",
        too_big.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The checker checks itself, on small fake crates.
// ---------------------------------------------------------------------------

fn fake_crate(files: &[(&str, &str)]) -> (tempfile::TempDir, Crate) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (path, text) in files {
        let p = src.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let c = Crate::scan(&src);
    (dir, c)
}

fn edges(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn strip_blanks_comments_and_literals_but_keeps_lines() {
    let src =
        "let a = \"crate::x\"; // crate::y\n/* crate::z /* nested */ */ let b = r#\"crate::w\"#;\n\
               let c = '{'; let d = b'}'; fn f<'a>(x: &'a str) -> char { '\\'' }\ncrate::real";
    let s = strip(src);
    assert_eq!(s.lines().count(), src.lines().count());
    for gone in [
        "crate::x", "crate::y", "crate::z", "crate::w", "'{'", "b'}'",
    ] {
        assert!(!s.contains(gone), "{gone} left in {s}");
    }
    assert!(s.contains("<'a>") && s.contains("&'a str"), "{s}");
    assert!(s.lines().nth(3).unwrap().contains("crate::real"), "{s}");
    assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
}

#[test]
fn a_circle_through_a_reexport_is_reported() {
    let (_dir, c) = fake_crate(&[
        ("lib.rs", "mod a;\nmod b;\npub use b::Thing;\n"),
        ("a.rs", "use crate::Thing;\npub fn fa() {}\n"),
        (
            "b.rs",
            "pub struct Thing;\nfn g() {\n    crate::a::fa();\n}\n",
        ),
    ]);
    assert_eq!(c.edge_names(), edges(&[("a.rs", "b.rs"), ("b.rs", "a.rs")]));
    let circles = c.circles("fake");
    assert_eq!(
        circles,
        vec![
            "fake: a.rs -> b.rs -> a.rs\n    a.rs:1 -> b.rs: `crate::Thing`\n    b.rs:3 -> a.rs: `crate::a::fa`"
                .to_string()
        ]
    );
}

#[test]
fn tests_comments_strings_and_reexports_are_not_edges() {
    let (_dir, c) = fake_crate(&[
        ("lib.rs", "mod a;\nmod b;\npub use b::Thing;\npub use a::{fa};\n"),
        ("a.rs", "use crate::Thing;\npub fn fa() {}\n"),
        (
            "b.rs",
            "//! See [`crate::a::fa`].\npub struct Thing;\nfn g() -> &'static str { \"crate::a::fa\" }\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::a::fa;\n    fn t() { crate::a::fa(); }\n}\n",
        ),
    ]);
    assert_eq!(c.edge_names(), edges(&[("a.rs", "b.rs")]));
    assert!(c.circles("fake").is_empty());
}

#[test]
fn super_self_groups_and_nested_modules_resolve() {
    let (_dir, c) = fake_crate(&[
        ("lib.rs", "mod m;\nmod n;\npub fn top() {}\n"),
        (
            "m/mod.rs",
            "mod x;\nmod y;\npub use self::y::Why;\nuse x::Ex;\nfn f(_: Ex) {}\n",
        ),
        ("m/x.rs", "use crate::{m::{Why}, top};\npub struct Ex;\n"),
        (
            "m/y.rs",
            "pub struct Why;\nfn h() {\n    super::super::top();\n    super::x::Ex;\n}\n",
        ),
        (
            "n.rs",
            "mod deep;\nuse std::fs;\nfn k() { fs::read(\"\"); deep::Z; }\n",
        ),
        (
            "n/deep.rs",
            "pub struct Z;\nfn z() { let _ = super::super::m::Why; }\n",
        ),
    ]);
    assert_eq!(
        c.edge_names(),
        edges(&[
            ("m/mod.rs", "m/x.rs"),
            ("m/x.rs", "m/y.rs"),
            ("m/x.rs", "lib.rs"),
            ("m/y.rs", "lib.rs"),
            ("m/y.rs", "m/x.rs"),
            ("n.rs", "n/deep.rs"),
            ("n/deep.rs", "m/y.rs"),
        ])
    );
    assert_eq!(c.circles("fake").len(), 1);
    assert!(c.circles("fake")[0].starts_with("fake: m/x.rs -> m/y.rs -> m/x.rs"));
}

#[test]
fn inline_modules_and_globs_resolve() {
    let (_dir, c) = fake_crate(&[
        ("main.rs", "mod a;\nmod b;\nfn main() {}\n"),
        ("a.rs", "use crate::b::*;\npub mod inner {\n    use super::*;\n    fn q() { super::local(); }\n}\nfn local() {}\n"),
        ("b.rs", "pub struct B;\n"),
    ]);
    assert_eq!(c.edge_names(), edges(&[("a.rs", "b.rs")]));
}
