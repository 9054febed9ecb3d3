//! Every WGSL file parses and validates with naga: no GPU needed.

use wgtrain_device::shaders::ALL;

#[test]
fn every_shader_parses_and_validates() {
    let mut failures = Vec::new();
    for shader in ALL {
        let module = match naga::front::wgsl::parse_str(shader.source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!(
                    "{}: {}",
                    shader.name,
                    e.emit_to_string(shader.source)
                ));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{}: {}",
                shader.name,
                e.emit_to_string(shader.source)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid shaders:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_file_in_shaders_dir_is_compiled_in() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders");
    for entry in std::fs::read_dir(dir).expect("shaders/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        assert!(
            ALL.iter().any(|s| s.name == stem),
            "shaders/{stem}.wgsl is not in shaders::ALL"
        );
    }
}
