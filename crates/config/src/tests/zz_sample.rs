#[test]
fn sample() {
    for t in [
        std::fs::read_to_string("/tmp/sample.yaml").unwrap(),
        "listeners:\n  - name: a\n    bind: x:1\n    routes:\n      - name: r\n        forward: { target_group: g }\n  - name: b\n   bind: y\n".to_string(),
        "listeners:\n  - name: a\n    bind: x:1\n    protocol: htp\n".to_string(),
        "x: &a 1\ntarget_groups:\n  - { name: g, failover: *a }\n".to_string(),
        "a: 1\n---\nb: 2\n".to_string(),
        "listeners:\n  - name: a\n    bind: x:1\n    routes:\n      - name: r\n        forward: { target_group: g }\n".to_string(),
    ] {
        match crate::parse_str(&t, "f.yaml", std::path::Path::new(".")) {
            Ok(_) => println!("ok"),
            Err(e) => println!("ERR {e}"),
        }
    }
}
