//! Pydantic-v2-style coercion of single JSON fields, producing FastAPI's 422 error items
//! (`{"type", "loc", "msg", "input"}`) so the simulator rejects bodies the way BFL does.

use serde_json::{Map, Value, json};

/// One entry of FastAPI's `{"detail": [...]}` list.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct FieldError {
    pub loc: Vec<Value>,
    pub kind: &'static str,
    pub msg: String,
    pub input: Value,
}

impl FieldError {
    pub(super) fn body(field: &str, kind: &'static str, msg: impl Into<String>, input: Value) -> Self {
        FieldError { loc: vec![json!("body"), json!(field)], kind, msg: msg.into(), input }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({ "type": self.kind, "loc": self.loc, "msg": self.msg, "input": self.input })
    }
}

/// Reads fields out of a request body, collecting every error like pydantic does.
pub(super) struct Fields<'a> {
    body: &'a Map<String, Value>,
    pub errors: Vec<FieldError>,
}

/// A field's value once absent and (where allowed) null have been handled.
enum Present<'a> {
    Absent,
    Value(&'a Value),
}

impl<'a> Fields<'a> {
    pub(super) fn new(body: &'a Map<String, Value>) -> Self {
        Fields { body, errors: Vec::new() }
    }

    /// Absent, or null on a nullable field, both mean "use the default".
    fn get(&self, name: &str, nullable: bool) -> Present<'a> {
        match self.body.get(name) {
            None => Present::Absent,
            Some(Value::Null) if nullable => Present::Absent,
            Some(v) => Present::Value(v),
        }
    }

    fn fail(&mut self, name: &str, kind: &'static str, msg: impl Into<String>, input: &Value) {
        self.errors.push(FieldError::body(name, kind, msg, input.clone()));
    }

    pub(super) fn missing(&mut self, name: &str) {
        self.errors.push(FieldError::body(name, "missing", "Field required", Value::Null));
    }

    /// `str` (or `str | None`); pydantic does not turn numbers into strings for JSON input.
    pub(super) fn string(&mut self, name: &str, nullable: bool) -> Option<&'a str> {
        match self.get(name, nullable) {
            Present::Absent => None,
            Present::Value(Value::String(s)) => Some(s),
            Present::Value(v) => {
                self.fail(name, "string_type", "Input should be a valid string", v);
                None
            }
        }
    }

    /// `bool`, with pydantic's lax conversions (0/1 and the usual words).
    pub(super) fn boolean(&mut self, name: &str, nullable: bool) -> Option<bool> {
        let v = match self.get(name, nullable) {
            Present::Absent => return None,
            Present::Value(v) => v,
        };
        let parsed = match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_f64() {
                Some(0.0) => Some(false),
                Some(1.0) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
                "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
                _ => {
                    let msg = "Input should be a valid boolean, unable to interpret input";
                    self.fail(name, "bool_parsing", msg, v);
                    return None;
                }
            },
            _ => None,
        };
        if parsed.is_none() {
            self.fail(name, "bool_type", "Input should be a valid boolean", v);
        }
        parsed
    }

    /// `int` with optional `multiple_of`, `le`, `ge` (checked in pydantic-core's order).
    /// Values beyond i64 saturate, which keeps range checks honest without panicking.
    pub(super) fn int(&mut self, name: &str, nullable: bool, range: Range<i64>) -> Option<i64> {
        let v = match self.get(name, nullable) {
            Present::Absent => return None,
            Present::Value(v) => v,
        };
        let n = match int_of(v) {
            Ok(n) => n,
            Err((kind, msg)) => {
                self.fail(name, kind, msg, v);
                return None;
            }
        };
        if let Some(m) = range.multiple_of
            && n.checked_rem(m).is_some_and(|r| r != 0)
        {
            self.fail(name, "multiple_of", format!("Input should be a multiple of {m}"), v);
            return None;
        }
        self.bounds(name, v, n, range.min, range.max).then_some(n)
    }

    /// `float` (pydantic's `number`) within an optional range.
    pub(super) fn number(&mut self, name: &str, nullable: bool, range: Range<f64>) -> Option<f64> {
        let v = match self.get(name, nullable) {
            Present::Absent => return None,
            Present::Value(v) => v,
        };
        let x = match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Some(x),
                _ => {
                    let msg = "Input should be a valid number, unable to parse string as a number";
                    self.fail(name, "float_parsing", msg, v);
                    return None;
                }
            },
            _ => None,
        };
        let Some(x) = x else {
            self.fail(name, "float_type", "Input should be a valid number", v);
            return None;
        };
        self.bounds(name, v, x, range.min, range.max).then_some(x)
    }

    fn bounds<T: PartialOrd + std::fmt::Display>(
        &mut self,
        name: &str,
        v: &Value,
        x: T,
        min: Option<T>,
        max: Option<T>,
    ) -> bool {
        if let Some(max) = max
            && x > max
        {
            let msg = format!("Input should be less than or equal to {max}");
            self.fail(name, "less_than_equal", msg, v);
            return false;
        }
        if let Some(min) = min
            && x < min
        {
            let msg = format!("Input should be greater than or equal to {min}");
            self.fail(name, "greater_than_equal", msg, v);
            return false;
        }
        true
    }

    /// A string enum such as `OutputFormat`.
    pub(super) fn choice(&mut self, name: &str, nullable: bool, allowed: &[&str]) -> Option<&'a str> {
        let v = match self.get(name, nullable) {
            Present::Absent => return None,
            Present::Value(v) => v,
        };
        if let Value::String(s) = v
            && allowed.contains(&s.as_str())
        {
            return Some(s);
        }
        let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
        let expected = match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => quoted.join(""),
        };
        self.fail(name, "enum", format!("Input should be {expected}"), v);
        None
    }
}

/// Optional numeric constraints of one field.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Range<T> {
    pub min: Option<T>,
    pub max: Option<T>,
    pub multiple_of: Option<T>,
}

impl<T> Range<T> {
    pub(super) fn between(min: T, max: T) -> Self {
        Range { min: Some(min), max: Some(max), multiple_of: None }
    }
}

/// Stand-in for integers beyond i64: huge, and (like any large float) a multiple of 16 and 32,
/// so such a value fails the range check rather than `multiple_of`, as it would in Python.
const BIG: i64 = i64::MAX & !0xFFFF;

fn saturate(x: f64) -> i64 {
    if x >= BIG as f64 {
        BIG
    } else if x <= i64::MIN as f64 {
        i64::MIN
    } else {
        x as i64
    }
}

/// Pydantic's lax `int`: integers, integral floats, numeric strings and booleans.
fn int_of(v: &Value) -> Result<i64, (&'static str, &'static str)> {
    const FRACTION: &str = "Input should be a valid integer, got a number with a fractional part";
    match v {
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Ok(BIG)
            } else {
                match n.as_f64() {
                    Some(x) if x.fract() == 0.0 => Ok(saturate(x)),
                    _ => Err(("int_from_float", FRACTION)),
                }
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(i);
            }
            match t.parse::<f64>() {
                Ok(x) if x.is_finite() && x.fract() == 0.0 => Ok(saturate(x)),
                Ok(x) if x.is_finite() => Err(("int_from_float", FRACTION)),
                _ => Err((
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                )),
            }
        }
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
