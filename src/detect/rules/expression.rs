//! Expression rules: a condition over the device's points (`run_state == 1 && current_l1 <
//! 0.5`), compiled per device by config (see [`Expr`]).

use serde::Deserialize;

use crate::detect::expr::Expr;
use crate::detect::spec::Target;

/// The message of an expression rule that gives none.
pub const MESSAGE: &str = "{device}: {when}";

/// `kind = "expression"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    /// The condition, as written.
    pub when: String,
    /// The condition compiled for the running target's device.
    #[serde(skip)]
    pub compiled: Option<Box<Expr>>,
}

impl Expression {
    /// Takes the condition compiled for `target`; `None` when it has none.
    pub(super) fn start(&mut self, target: &Target) -> Option<()> {
        self.compiled = Some(Box::new(target.expr.clone()?));
        Some(())
    }

    /// Whether the condition holds over the device's latest `values` (`None` while a point
    /// it reads has no good value).
    pub fn holds(&self, values: &[Option<f64>]) -> Option<bool> {
        self.compiled.as_ref()?.eval(values)
    }
}
