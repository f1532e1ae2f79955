//! Request validation: rules beyond what the types say, checked after the request is decoded
//! and before the handler runs, the same for a client's request and for a call.
//!
//! Derive [`garde::Validate`] (re-exported as `ovation::garde`) and every rule is checked:
//!
//! ```ignore
//! #[derive(Deserialize, JsonSchema, garde::Validate)]
//! pub struct CreateUserParams {
//!     #[garde(email)]
//!     pub email: String,
//!     #[garde(length(chars, min = 8))]
//!     pub password: Option<String>,
//! }
//! ```
//!
//! or implement [`Validate`] by hand. A request that fails is `400 invalid_argument`, every
//! offending field in `details.fields` as `{"field": "password", "message": "..."}`.

use crate::error::Error;

/// A request type with rules of its own, checked before the handler runs.
pub trait Validate {
    /// `Ok(())`, or every field that breaks a rule.
    fn validate(&self) -> Result<(), Invalid>;
}

/// The fields of a request that break its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalid {
    fields: Vec<FieldError>,
}

/// One field that breaks a rule: its path (`items[0].name`) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Invalid {
    /// No field yet.
    pub fn new() -> Invalid {
        Invalid::default()
    }

    /// Adds `field` with `message`.
    pub fn field(mut self, field: impl Into<String>, message: impl Into<String>) -> Invalid {
        self.fields.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// The offending fields.
    pub fn fields(&self) -> &[FieldError] {
        &self.fields
    }

    /// `Err(self)` when a field was added.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.fields.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Error {
        let summary = invalid
            .fields
            .iter()
            .map(|f| {
                if f.field.is_empty() {
                    f.message.clone()
                } else {
                    format!("`{}`: {}", f.field, f.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Error::invalid_argument(format!("invalid request: {summary}"))
            .with_details(serde_json::json!({ "fields": invalid.fields }))
    }
}

impl<T> Validate for T
where
    T: garde::Validate,
    T::Context: Default,
{
    fn validate(&self) -> Result<(), Invalid> {
        garde::Validate::validate(self).map_err(|report| Invalid {
            fields: report
                .iter()
                .map(|(path, error)| FieldError {
                    field: path.to_string(),
                    message: error.message().to_owned(),
                })
                .collect(),
        })
    }
}

/// Picks a request's validation when its type has one (see [`ValidateOf`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct ValidateProbe<T>(std::marker::PhantomData<fn() -> T>);

impl<T> ValidateProbe<T> {
    pub const NEW: Self = ValidateProbe(std::marker::PhantomData);
}

/// `(&ValidateProbe::<T>::NEW).validate_request(&r)` in generated code: the type's
/// [`Validate`] when it has one (this impl, found first by method resolution), else nothing
/// to check ([`NoValidate`], one auto-reference later).
#[doc(hidden)]
pub trait ValidateOf<T> {
    fn validate_request(&self, request: &T) -> Result<(), Error>;
}

impl<T: Validate> ValidateOf<T> for ValidateProbe<T> {
    fn validate_request(&self, request: &T) -> Result<(), Error> {
        request.validate().map_err(Error::from)
    }
}

#[doc(hidden)]
pub trait NoValidate<T> {
    fn validate_request(&self, request: &T) -> Result<(), Error>;
}

impl<T> NoValidate<T> for &ValidateProbe<T> {
    fn validate_request(&self, _: &T) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
// The probes are written as generated code writes them: the borrow is what picks the impl.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    #[derive(garde::Validate)]
    struct Signup {
        #[garde(length(chars, min = 8))]
        password: String,
        #[garde(range(min = 1))]
        quantity: i32,
    }

    struct Plain;

    struct ByHand(i32);

    impl Validate for ByHand {
        fn validate(&self) -> Result<(), Invalid> {
            let mut invalid = Invalid::new();
            if self.0 < 0 {
                invalid = invalid.field("n", "must not be negative");
            }
            invalid.into_result()
        }
    }

    #[test]
    fn every_broken_rule_is_a_field_in_the_details() {
        let bad = Signup {
            password: "short".into(),
            quantity: 0,
        };
        let e = (&ValidateProbe::<Signup>::NEW)
            .validate_request(&bad)
            .unwrap_err();
        assert_eq!(e.code(), crate::ErrCode::InvalidArgument);
        let fields = &e.details().unwrap()["fields"];
        let names: Vec<&str> = fields
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["password", "quantity"], "{e}");
        assert!(e.message().contains("`password`"), "{e}");
        let good = Signup {
            password: "long enough".into(),
            quantity: 1,
        };
        (&ValidateProbe::<Signup>::NEW)
            .validate_request(&good)
            .unwrap();
    }

    #[test]
    fn types_without_rules_pass_and_hand_written_rules_apply() {
        #[allow(unused_imports)]
        use NoValidate as _;
        (&ValidateProbe::<Plain>::NEW)
            .validate_request(&Plain)
            .unwrap();
        (&ValidateProbe::<ByHand>::NEW)
            .validate_request(&ByHand(1))
            .unwrap();
        let e = (&ValidateProbe::<ByHand>::NEW)
            .validate_request(&ByHand(-1))
            .unwrap_err();
        assert_eq!(e.details().unwrap()["fields"][0]["field"], "n");
    }
}
