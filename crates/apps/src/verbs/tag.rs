//! `tag`: `data` (an object) becomes the call's `customerData`, sent with every request
//! after it. It replaces an earlier tag, as jambonz's tag verb does.

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::Props;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tag {
    pub data: Map<String, Value>,
}

impl Props for Tag {}

/// Whole numbers written as floats (`1.0`) go out as integers, as JavaScript writes them
/// (the jambonz SDK checks the signature over its own re-serialisation of the body).
fn normalise(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Value::Number(Number::from(f as i64))
            }
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        other => other,
    }
}

/// [`normalise`] for every value of an object.
pub(crate) fn normalise_map(data: Map<String, Value>) -> Map<String, Value> {
    data.into_iter().map(|(k, v)| (k, normalise(v))).collect()
}

impl Tag {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.session
            .set_customer_data(normalise_map(self.data.clone()));
        Ok(Flow::Next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_floats_become_integers() {
        let v: Value = serde_json::from_str(r#"{"a":1.0,"b":[2.5,3.0],"c":"x"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&normalise(v)).unwrap(),
            r#"{"a":1,"b":[2.5,3],"c":"x"}"#
        );
        assert_eq!(normalise(json!(1e300)), json!(1e300));
    }
}
