//! `lvn schema` and the schema file in the repository are the same bytes,
//! and the file describes every key of the examples.

use std::process::Command;

#[test]
fn schema_file_matches_lvn_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_lvn"))
        .arg("schema")
        .output()
        .expect("run lvn schema");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/topology.schema.json"
    ))
    .expect("schemas/topology.schema.json exists");
    assert_eq!(
        printed, file,
        "schemas/topology.schema.json is stale: run `lvn schema > schemas/topology.schema.json`"
    );
}

/// Every key used in the examples is a property the schema declares, so
/// an editor using the `#:schema` comment never flags a valid file.
#[test]
fn schema_declares_every_key_of_the_examples() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/topology.schema.json"
        ))
        .expect("schema file"),
    )
    .expect("schema is JSON");
    let props = |def: &str| -> Vec<String> {
        schema["$defs"][def]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("$defs.{def}.properties"))
            .keys()
            .cloned()
            .collect()
    };
    let network_keys = props("RawNetwork");
    let node_keys = props("RawNode");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("read example");
        assert!(
            text.starts_with("#:schema "),
            "{} has no #:schema comment",
            path.display()
        );
        let doc: toml::Table = toml::from_str(&text).expect("example is TOML");
        for key in doc["network"].as_table().expect("[network]").keys() {
            assert!(
                network_keys.contains(key),
                "{}: network.{key}",
                path.display()
            );
        }
        for (name, node) in doc["nodes"].as_table().expect("[nodes]") {
            for key in node.as_table().expect("node table").keys() {
                assert!(
                    node_keys.contains(key),
                    "{}: nodes.{name}.{key}",
                    path.display()
                );
            }
        }
    }
    assert!(seen > 0, "no examples found");
}
