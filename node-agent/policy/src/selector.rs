//! Label selectors, validated once and matched many times.
//!
//! Invariant: a [`Selector`] is canonical (requirements sorted and deduplicated, `matchLabels`
//! turned into `In` requirements), so two selectors that mean the same thing have the same
//! [`Selector::key`]: the compiler names address sets after that key and shares them between
//! policies. A selector that does not validate never becomes a `Selector`; the caller gets the
//! [`Refusal`] instead.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::Refusal;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// The key has one of the values.
    In(String, Vec<String>),
    /// The key is absent or has none of the values.
    NotIn(String, Vec<String>),
    /// The key is present.
    Exists(String),
    /// The key is absent.
    DoesNotExist(String),
}

/// A validated, canonical label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Validates `sel`; `field` names where it is in the object, for the message.
    pub fn parse(sel: &LabelSelector, field: &str) -> Result<Selector, Refusal> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            check_key(k, &format!("{field}.matchLabels"))?;
            check_value(v, &format!("{field}.matchLabels[{k}]"))?;
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            check_key(&e.key, &f)?;
            let mut values = e.values.clone().unwrap_or_default();
            for v in &values {
                check_value(v, &f)?;
            }
            values.sort();
            values.dedup();
            let need_values = |present: bool| -> Result<(), Refusal> {
                match (present, values.is_empty()) {
                    (true, true) => Err(Refusal::SelectorValues {
                        field: f.clone(),
                        operator: e.operator.clone(),
                        what: "needs at least one value",
                    }),
                    (false, false) => Err(Refusal::SelectorValues {
                        field: f.clone(),
                        operator: e.operator.clone(),
                        what: "takes no values",
                    }),
                    _ => Ok(()),
                }
            };
            let r = match e.operator.as_str() {
                "In" => {
                    need_values(true)?;
                    Requirement::In(e.key.clone(), values)
                }
                "NotIn" => {
                    need_values(true)?;
                    Requirement::NotIn(e.key.clone(), values)
                }
                "Exists" => {
                    need_values(false)?;
                    Requirement::Exists(e.key.clone())
                }
                "DoesNotExist" => {
                    need_values(false)?;
                    Requirement::DoesNotExist(e.key.clone())
                }
                other => {
                    return Err(Refusal::SelectorOperator {
                        field: f,
                        operator: other.to_owned(),
                    });
                }
            };
            reqs.push(r);
        }
        reqs.sort();
        reqs.dedup();
        Ok(Selector { reqs })
    }

    /// Whether the selector matches `labels` (all requirements hold).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether this is the empty selector (matches everything).
    pub fn is_everything(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The canonical text of the selector, equal for equal selectors.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reqs.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0])?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

fn is_name_part(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Label keys: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters.
fn check_key(k: &str, field: &str) -> Result<(), Refusal> {
    let ok = match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name, 63),
        None => is_name_part(k, 63),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::LabelSyntax {
            field: field.to_owned(),
            value: k.to_owned(),
            what: "key",
        })
    }
}

/// Label values: empty, or at most 63 characters of the name alphabet.
fn check_value(v: &str, field: &str) -> Result<(), Refusal> {
    if v.is_empty() || is_name_part(v, 63) {
        Ok(())
    } else {
        Err(Refusal::LabelSyntax {
            field: field.to_owned(),
            value: v.to_owned(),
            what: "value",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|s| s.to_string()).collect()),
            }]),
        }
    }

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_match_as_kubernetes_defines_them() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        let cases = [
            (expr("app", "In", &["web", "db"]), true, false),
            (expr("app", "In", &["db"]), false, false),
            (expr("app", "NotIn", &["db"]), true, true),
            (expr("app", "NotIn", &["web"]), false, true),
            (expr("app", "Exists", &[]), true, false),
            (expr("app", "DoesNotExist", &[]), false, true),
            (LabelSelector::default(), true, true),
        ];
        for (sel, on_l, on_none) in cases {
            let s = Selector::parse(&sel, "x").expect("valid");
            assert_eq!(s.matches(&l), on_l, "{s} on {l:?}");
            assert_eq!(s.matches(&none), on_none, "{s} on no labels");
        }
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_field() {
        let cases = [
            (expr("app", "Equals", &["x"]), "unknown selector operator"),
            (expr("app", "In", &[]), "needs at least one value"),
            (expr("app", "Exists", &["x"]), "takes no values"),
            (expr("-bad", "Exists", &[]), "not a valid label key"),
            (
                expr("app", "In", &["white space"]),
                "not a valid label value",
            ),
            (
                expr("UPPER.example/app", "Exists", &[]),
                "not a valid label key",
            ),
        ];
        for (sel, want) in cases {
            let err = Selector::parse(&sel, "spec.podSelector").expect_err("refused");
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.contains("spec.podSelector"),
                "{msg}"
            );
        }
    }

    #[test]
    fn equal_selectors_have_equal_keys() {
        let a = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: None,
        };
        let b = expr("app", "In", &["web"]);
        let (a, b) = (
            Selector::parse(&a, "a").expect("a"),
            Selector::parse(&b, "b").expect("b"),
        );
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), "app=web");
        let c = expr("app", "In", &["web", "db", "web"]);
        assert_eq!(
            Selector::parse(&c, "c").expect("c").key(),
            "app in (db,web)"
        );
    }
}
