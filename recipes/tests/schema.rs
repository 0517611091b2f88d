//! `model.schema.json` must be the schema the parser is built from.
//! `REPRO_UPDATE_SCHEMA=1 cargo test -p repro-recipes --test schema` rewrites it.

use std::path::Path;

#[test]
fn checked_in_schema_matches_the_parser() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("model.schema.json");
    let mut generated =
        serde_json::to_string_pretty(&repro_recipes::json_schema()).expect("schema is JSON");
    generated.push('\n');
    if std::env::var_os("REPRO_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&file, &generated).expect("write model.schema.json");
        return;
    }
    let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        on_disk == generated,
        "recipes/model.schema.json is out of date with the recipe structs\n\
         hint: run `REPRO_UPDATE_SCHEMA=1 cargo test -p repro-recipes --test schema` and commit the result"
    );
}

#[test]
fn schema_describes_the_format() {
    let schema = repro_recipes::json_schema();
    let top = &schema["properties"];
    for key in [
        "model",
        "build",
        "toolchains",
        "data",
        "code",
        "params",
        "steps",
    ] {
        assert!(top.get(key).is_some(), "schema lacks top-level `{key}`");
    }
    assert_eq!(schema["required"], serde_json::json!(["model"]));
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let step = &schema["definitions"]["Step"];
    assert_eq!(step["additionalProperties"], serde_json::json!(false));
    assert_eq!(
        step["required"],
        serde_json::json!(["argv", "name", "toolchain"])
    );
}
