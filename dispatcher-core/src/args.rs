//! Mapping a message's positional and named arguments onto a task's parameters.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Maps `args` and `kwargs` onto `params` (parameter names in declaration order).
///
/// Positional arguments fill the first parameters; named ones fill the rest. The result has one
/// entry per parameter, `None` where the message gave nothing (a parameter of type `Option<T>`
/// then receives `None`). Too many positional arguments, an unknown name, or a parameter given
/// both ways is an error naming the task and the argument.
///
/// ```
/// use serde_json::{json, Map};
/// use dispatcher_core::args::bind_arguments;
/// let kwargs: Map<_, _> = json!({"b": 2}).as_object().unwrap().clone();
/// let bound = bind_arguments("demo.add", &["a", "b"], vec![json!(1)], kwargs).unwrap();
/// assert_eq!(bound, vec![Some(json!(1)), Some(json!(2))]);
/// ```
pub fn bind_arguments(
    task: &str,
    params: &[&str],
    args: Vec<Value>,
    mut kwargs: Map<String, Value>,
) -> Result<Vec<Option<Value>>> {
    if args.len() > params.len() {
        return Err(Error::Arguments {
            task: task.to_owned(),
            problem: format!(
                "takes {} argument{} ({}) but {} positional were given",
                params.len(),
                if params.len() == 1 { "" } else { "s" },
                params.join(", "),
                args.len()
            ),
        });
    }
    let given = args.len();
    for name in &params[..given] {
        if kwargs.contains_key(*name) {
            return Err(Error::Arguments {
                task: task.to_owned(),
                problem: format!("argument `{name}` was given both by position and by name"),
            });
        }
    }
    let mut bound: Vec<Option<Value>> = Vec::with_capacity(params.len());
    bound.extend(args.into_iter().map(Some));
    for name in &params[given..] {
        bound.push(kwargs.remove(*name));
    }
    if let Some(extra) = kwargs.keys().next() {
        return Err(Error::Arguments {
            task: task.to_owned(),
            problem: format!(
                "unexpected argument `{extra}`; the parameters are ({})",
                params.join(", ")
            ),
        });
    }
    Ok(bound)
}

/// Deserializes one bound argument into its parameter type.
///
/// A missing argument is accepted only where the type accepts `null` (e.g. `Option<T>`).
pub fn decode_argument<T: DeserializeOwned>(
    task: &str,
    name: &str,
    value: Option<&Value>,
) -> Result<T> {
    match value {
        Some(v) => T::deserialize(v).map_err(|e| Error::Arguments {
            task: task.to_owned(),
            problem: format!("argument `{name}`: {e}"),
        }),
        None => T::deserialize(&Value::Null).map_err(|_| Error::Arguments {
            task: task.to_owned(),
            problem: format!("missing argument `{name}`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn errors_name_task_and_argument() {
        let e = bind_arguments(
            "demo.add",
            &["a", "b"],
            vec![json!(1), json!(2), json!(3)],
            Map::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("demo.add") && e.contains("takes 2 arguments (a, b) but 3"),
            "{e}"
        );
        let e = bind_arguments("t", &["a"], vec![], obj(json!({"z": 1})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected argument `z`"), "{e}");
        let e = bind_arguments("t", &["a"], vec![json!(1)], obj(json!({"a": 1})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a` was given both"), "{e}");
        let e = decode_argument::<i64>("t", "a", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing argument `a`"), "{e}");
        let e = decode_argument::<i64>("t", "a", Some(&json!("x")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("argument `a`: invalid type: string \"x\", expected i64"),
            "{e}"
        );
        assert_eq!(
            decode_argument::<Option<i64>>("t", "a", None).unwrap(),
            None
        );
    }

    proptest! {
        /// However the values are split between positional and named, binding yields them in
        /// parameter order.
        #[test]
        fn any_split_binds_in_order(values in proptest::collection::vec(any::<i64>(), 0..8), cut in 0usize..8, reversed in any::<bool>()) {
            let names: Vec<String> = (0..values.len()).map(|i| format!("p{i}")).collect();
            let params: Vec<&str> = names.iter().map(String::as_str).collect();
            let cut = cut.min(values.len());
            let args: Vec<Value> = values[..cut].iter().map(|v| json!(v)).collect();
            let mut named: Vec<(String, Value)> = (cut..values.len()).map(|i| (names[i].clone(), json!(values[i]))).collect();
            if reversed { named.reverse(); }
            let kwargs: Map<String, Value> = named.into_iter().collect();
            let bound = bind_arguments("t", &params, args, kwargs).unwrap();
            let got: Vec<i64> = bound.iter().enumerate().map(|(i, v)| decode_argument::<i64>("t", params[i], v.as_ref()).unwrap()).collect();
            prop_assert_eq!(got, values);
        }

        /// Unknown names are always rejected, and never panic.
        #[test]
        fn unknown_names_rejected(extra in "[a-z]{1,8}", n in 0usize..4) {
            let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            let params: Vec<&str> = names.iter().map(String::as_str).collect();
            prop_assume!(!names.contains(&extra));
            let kwargs: Map<String, Value> = [(extra.clone(), json!(1))].into_iter().collect();
            let e = bind_arguments("t", &params, vec![], kwargs).unwrap_err().to_string();
            prop_assert!(e.contains(&extra));
        }

        /// Arbitrary JSON values never panic the decoder of a typed parameter.
        #[test]
        fn arbitrary_values_never_panic(s in ".{0,40}", n in any::<f64>(), b in any::<bool>()) {
            for v in [json!(s), json!(n), json!(b), json!([s.clone()]), json!({"k": s})] {
                let _ = decode_argument::<i64>("t", "a", Some(&v));
                let _ = decode_argument::<String>("t", "a", Some(&v));
                let _ = decode_argument::<Vec<u8>>("t", "a", Some(&v));
            }
        }
    }
}
