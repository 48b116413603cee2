//! Tests of pydantic-style field coercion.

use super::*;

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn integers_are_coerced_and_checked_like_pydantic() {
    let b = body(json!({"a": "48", "b": 40, "c": 1.5, "d": 1e300, "e": null, "f": [1]}));
    let mut f = Fields::new(&b);
    let r = Range { min: Some(0), max: Some(100), multiple_of: Some(16) };
    assert_eq!(f.int("a", false, r), Some(48));
    assert_eq!(f.int("b", false, r), None);
    assert_eq!(f.int("c", false, r), None);
    assert_eq!(f.int("d", false, r), None);
    assert_eq!(f.int("e", true, r), None);
    assert_eq!(f.int("f", false, r), None);
    let kinds: Vec<_> = f.errors.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["multiple_of", "int_from_float", "less_than_equal", "int_type"]);
    assert_eq!(f.errors[0].loc, vec![json!("body"), json!("b")]);
}

#[test]
fn enums_list_the_allowed_values() {
    let b = body(json!({"output_format": "gif"}));
    let mut f = Fields::new(&b);
    assert_eq!(f.choice("output_format", true, &["jpeg", "png", "webp"]), None);
    assert_eq!(f.errors[0].msg, "Input should be 'jpeg', 'png' or 'webp'");
}

#[test]
fn booleans_accept_pydantic_words_only() {
    let b = body(json!({"a": "yes", "b": 2, "c": "maybe"}));
    let mut f = Fields::new(&b);
    assert_eq!(f.boolean("a", false), Some(true));
    assert_eq!(f.boolean("b", false), None);
    assert_eq!(f.boolean("c", false), None);
    let kinds: Vec<_> = f.errors.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["bool_type", "bool_parsing"]);
}
