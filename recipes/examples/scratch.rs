#![allow(missing_docs)]
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Top { model: Spanned<Model>, #[serde(default)] toolchains: BTreeMap<Spanned<String>, Spanned<Tc>>, #[serde(default)] steps: Vec<Spanned<Step>>, #[serde(default)] params: BTreeMap<Spanned<String>, Spanned<toml::Value>> }
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Model { name: Spanned<String>, version: Option<Spanned<String>> }
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Tc { image: Option<Spanned<String>> }
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Step { name: Spanned<String>, #[serde(default)] argv: Vec<Spanned<String>>, #[serde(default)] env: BTreeMap<Spanned<String>, Spanned<String>>, limits: Option<Spanned<Limits>> }
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Limits { cpus: Option<Spanned<f64>> }
fn main() {
    for text in [
        "[model]\nname = \"a\"\n[toolchains.x]\nimage = \"i\"\n[[steps]]\nname = \"s\"\nargv = [\"a\", \"b\"]\nenv = { A = \"1\" }\nlimits = { cpus = 2 }\n[params]\nseed = 4\n",
        "[model]\nname = \"a\"\n[[steps]]\nname = \"s\"\n[[steps]]\nname = \"t\"\nbogus = 1\n",
        "[model]\nname = \"a\"\n[[steps]]\nname = \"s\"\nlimits = { cpus = \"x\" }\n",
        "[model]\nname = \"a\"\nfoo = 3\n",
        "[model]\nname = 3\n",
        "[model]\nversion = \"1\"\n",
        "[model]\nname = \"a\"\n[toolchains.x]\nimage = \"i\"\ntag = 1\n",
        "[model]\nname = \"a\nx",
    ] {
        let de = toml::Deserializer::new(text);
        let r: Result<Top, _> = serde_path_to_error::deserialize(de);
        match r {
            Ok(t) => println!("OK {t:#?}"),
            Err(e) => { println!("path={} msg={:?} span={:?}", e.path(), e.inner().message(), e.inner().span()); }
        }
    }
}
