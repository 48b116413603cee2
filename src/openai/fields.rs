//! Request fields as they arrive (JSON values, or multipart text where every value is a string),
//! read through typed getters whose errors name the offending parameter.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Json(Value),
    Text(String),
}

/// The named fields of one request. JSON `null` and absent are the same thing.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    values: HashMap<String, Raw>,
}

impl Fields {
    pub fn from_json(map: Map<String, Value>) -> Fields {
        let values = map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, Raw::Json(v))).collect();
        Fields { values }
    }

    /// Adds a multipart text field; a repeated name keeps the last value, as form parsers do.
    pub fn insert_text(&mut self, name: String, value: String) {
        self.values.insert(name, Raw::Text(value));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn string(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Raw::Text(s)) | Some(Raw::Json(Value::String(s))) => Ok(Some(s)),
            Some(Raw::Json(_)) => Err(ApiError::invalid(name, format!("`{name}` must be a string"))),
        }
    }

    pub fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let wrong = || ApiError::invalid(name, format!("`{name}` must be an integer"));
        match self.values.get(name) {
            None => Ok(None),
            Some(Raw::Json(Value::Number(n))) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                // 3.0 is an integer written as a float by some clients.
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                _ => Err(wrong()),
            },
            Some(Raw::Text(s)) | Some(Raw::Json(Value::String(s))) => {
                s.trim().parse().map(Some).map_err(|_| wrong())
            }
            Some(Raw::Json(_)) => Err(wrong()),
        }
    }

    pub fn number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        let wrong = || ApiError::invalid(name, format!("`{name}` must be a number"));
        let value = match self.values.get(name) {
            None => return Ok(None),
            Some(Raw::Json(Value::Number(n))) => n.as_f64().ok_or_else(wrong)?,
            Some(Raw::Text(s)) | Some(Raw::Json(Value::String(s))) => {
                s.trim().parse::<f64>().map_err(|_| wrong())?
            }
            Some(Raw::Json(_)) => return Err(wrong()),
        };
        if value.is_finite() { Ok(Some(value)) } else { Err(wrong()) }
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let wrong = || ApiError::invalid(name, format!("`{name}` must be true or false"));
        match self.values.get(name) {
            None => Ok(None),
            Some(Raw::Json(Value::Bool(b))) => Ok(Some(*b)),
            Some(Raw::Text(s)) | Some(Raw::Json(Value::String(s))) => {
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(Some(true)),
                    "false" | "0" => Ok(Some(false)),
                    _ => Err(wrong()),
                }
            }
            Some(Raw::Json(_)) => Err(wrong()),
        }
    }

    /// Every field as `(name, value)`, sorted by name, each value in one canonical text (JSON's
    /// own objects are key-sorted): two requests with the same fields give the same list.
    pub fn canonical(&self) -> Vec<(&str, String)> {
        let mut all: Vec<(&str, String)> = self
            .values
            .iter()
            .map(|(name, raw)| {
                let text = match raw {
                    Raw::Text(s) | Raw::Json(Value::String(s)) => format!("s:{s}"),
                    Raw::Json(v) => format!("j:{v}"),
                };
                (name.as_str(), text)
            })
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(map) => Fields::from_json(map),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn null_is_absent() {
        let f = fields(json!({"seed": null, "n": null}));
        assert_eq!(f.integer("seed"), Ok(None));
        assert!(!f.contains("n"));
    }

    #[test]
    fn multipart_text_parses_like_json() {
        let mut f = Fields::default();
        f.insert_text("n".into(), "1".into());
        f.insert_text("raw".into(), "true".into());
        f.insert_text("guidance".into(), "2.5".into());
        assert_eq!(f.integer("n"), Ok(Some(1)));
        assert_eq!(f.boolean("raw"), Ok(Some(true)));
        assert_eq!(f.number("guidance"), Ok(Some(2.5)));
    }

    #[test]
    fn wrong_types_name_the_parameter() {
        let f = fields(json!({"n": "many", "prompt": 3, "raw": "maybe", "guidance": [1]}));
        for (name, err) in [
            ("n", f.integer("n").err()),
            ("prompt", f.string("prompt").err()),
            ("raw", f.boolean("raw").err()),
            ("guidance", f.number("guidance").err()),
        ] {
            match err {
                Some(ApiError::InvalidRequest { param, .. }) => assert_eq!(param.as_deref(), Some(name)),
                other => panic!("{name}: expected an invalid-request error, got {other:?}"),
            }
        }
    }

    #[test]
    fn integral_floats_are_integers_but_fractions_are_not() {
        let f = fields(json!({"a": 3.0, "b": 3.5}));
        assert_eq!(f.integer("a"), Ok(Some(3)));
        assert!(f.integer("b").is_err());
    }
}
