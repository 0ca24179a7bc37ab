//! Privacy accounting: how the losses of many releases add up, and whether a new one still fits.
//!
//! A project's budget is an (ε, δ) pair because that is what a committee approves and what the law's
//! guidance speaks of. Releases are analysed in the unit of their mechanism — pure ε for Laplace
//! noise, ρ-zCDP for Gaussian noise, plus a δ spent outright by partition selection — and compose in
//! that unit: ε by basic composition (addition), ρ by addition, δ by addition. Only the *total* ρ is
//! converted to (ε, δ), once, with the part of the project's δ not already spent outright, using
//! OpenDP's conversion (Canonne–Kamath–Steinke): converting each release separately and adding the
//! ε's would be valid but much looser. The pure-ε part and the converted part then add by basic
//! composition of approximate DP.

use opendp::combinators::ConcentratedMeasure;
use opendp::measures::ZeroConcentratedDivergence;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Privacy loss of one release (or a sum of releases), in the units its mechanisms compose in.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PrivacyLoss {
    /// Pure-DP ε (Laplace noise; the ε of Laplace partition selection). Adds up.
    pub epsilon: f64,
    /// zCDP ρ (Gaussian noise; the ρ of Gaussian partition selection). Adds up.
    pub rho: f64,
    /// δ spent outright (the chance that partition selection reveals a key). Adds up.
    pub delta: f64,
}

impl PrivacyLoss {
    /// Component-wise sum: basic composition for ε and δ, additive composition for ρ.
    pub fn plus(&self, other: &PrivacyLoss) -> PrivacyLoss {
        PrivacyLoss {
            epsilon: self.epsilon + other.epsilon,
            rho: self.rho + other.rho,
            delta: self.delta + other.delta,
        }
    }

    /// Sum of many losses, in order (so the same entries always give the same bits).
    pub fn total<'a>(losses: impl IntoIterator<Item = &'a PrivacyLoss>) -> PrivacyLoss {
        losses.into_iter().fold(PrivacyLoss::default(), |acc, l| acc.plus(l))
    }

    /// Refuses negative, NaN or infinite components: they would let a request *add* budget.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("epsilon", self.epsilon), ("rho", self.rho), ("delta", self.delta)] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::Config(format!(
                    "privacy loss {name} must be finite and >= 0, got {v}"
                )));
            }
        }
        if self.delta >= 1.0 {
            return Err(Error::Config(format!("delta must be < 1, got {}", self.delta)));
        }
        Ok(())
    }
}

/// A project's approved budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Total ε the project may spend.
    pub epsilon: f64,
    /// Total δ the project may spend (0 allows pure-DP releases with public keys only).
    pub delta: f64,
}

impl Budget {
    /// Refuses budgets that make no sense (negative, NaN, δ ≥ 1).
    pub fn validate(&self) -> Result<()> {
        if !self.epsilon.is_finite() || self.epsilon < 0.0 {
            return Err(Error::Config(format!(
                "budget epsilon must be finite and >= 0, got {}",
                self.epsilon
            )));
        }
        if !self.delta.is_finite() || !(0.0..1.0).contains(&self.delta) {
            return Err(Error::Config(format!(
                "budget delta must be in [0, 1), got {}",
                self.delta
            )));
        }
        Ok(())
    }
}

/// A total loss expressed against a budget as (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// The composed loss in mechanism units.
    pub loss: PrivacyLoss,
    /// Total ε: pure ε plus the ε of the converted total ρ. Infinite if it cannot be expressed
    /// within the budget's δ (some ρ but no δ left to convert it with).
    pub epsilon: f64,
    /// Total δ: δ spent outright, plus the δ used to convert ρ (all of the budget's remaining δ).
    pub delta: f64,
}

impl Spent {
    /// ε still available, never negative.
    pub fn remaining_epsilon(&self, budget: &Budget) -> f64 {
        (budget.epsilon - self.epsilon).max(0.0)
    }

    /// δ not spent outright, never negative.
    pub fn remaining_delta(&self, budget: &Budget) -> f64 {
        (budget.delta - self.loss.delta).max(0.0)
    }

    /// Whether this total stays within the budget.
    pub fn fits(&self, budget: &Budget) -> bool {
        self.epsilon <= budget.epsilon && self.loss.delta <= budget.delta && self.delta <= budget.delta
    }
}

/// Expresses the composed `loss` as (ε, δ) against `budget` (see the module documentation).
pub fn spent(loss: &PrivacyLoss, budget: &Budget) -> Result<Spent> {
    loss.validate()?;
    budget.validate()?;
    if loss.rho == 0.0 {
        return Ok(Spent {
            loss: *loss,
            epsilon: loss.epsilon,
            delta: loss.delta,
        });
    }
    let conversion_delta = budget.delta - loss.delta;
    if conversion_delta <= 0.0 {
        return Ok(Spent {
            loss: *loss,
            epsilon: f64::INFINITY,
            delta: budget.delta,
        });
    }
    Ok(Spent {
        loss: *loss,
        epsilon: loss.epsilon + zcdp_epsilon(loss.rho, conversion_delta)?,
        delta: budget.delta,
    })
}

/// ε of a ρ-zCDP mechanism at a given δ, by OpenDP's conversion.
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Result<f64> {
    let profile = <ZeroConcentratedDivergence as ConcentratedMeasure>::convert(rho).map_err(Error::from)?;
    profile.epsilon(delta).map_err(Error::from)
}

/// Why a request was refused by [`admit`]: the numbers a researcher needs to shrink the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exceeded {
    /// The project's budget.
    pub budget: Budget,
    /// What is spent already.
    pub spent: Spent,
    /// What the total would be with the request.
    pub with_request: Spent,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request needs ε={:.6} δ={:.3e} in total but the budget is ε={} δ={:.3e}; remaining: ε={:.6}, δ={:.3e}",
            self.with_request.epsilon,
            self.with_request.loss.delta.max(if self.with_request.loss.rho > 0.0 {
                self.with_request.delta
            } else {
                0.0
            }),
            self.budget.epsilon,
            self.budget.delta,
            self.spent.remaining_epsilon(&self.budget),
            self.spent.remaining_delta(&self.budget),
        )
    }
}

/// Decides whether `request` may be spent on top of `already` within `budget`: the one admission
/// rule every ledger applies before any noise is drawn. Returns the new total if it fits.
pub fn admit(
    budget: &Budget,
    already: &PrivacyLoss,
    request: &PrivacyLoss,
) -> Result<std::result::Result<Spent, Exceeded>> {
    request.validate()?;
    let spent_now = spent(already, budget)?;
    let with_request = spent(&already.plus(request), budget)?;
    if with_request.fits(budget) {
        Ok(Ok(with_request))
    } else {
        Ok(Err(Exceeded {
            budget: *budget,
            spent: spent_now,
            with_request,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_epsilon_adds_up() {
        let budget = Budget {
            epsilon: 1.0,
            delta: 0.0,
        };
        let a = PrivacyLoss {
            epsilon: 0.4,
            ..Default::default()
        };
        let ok = admit(&budget, &a, &a).unwrap().unwrap();
        assert!((ok.epsilon - 0.8).abs() < 1e-12);
        let refused = admit(&budget, &ok.loss, &a).unwrap().unwrap_err();
        assert!((refused.spent.remaining_epsilon(&budget) - 0.2).abs() < 1e-12);
        assert!(refused.to_string().contains("remaining: ε=0.2"), "{refused}");
    }

    #[test]
    fn rho_is_converted_once_and_needs_delta() {
        let no_delta = Budget {
            epsilon: 10.0,
            delta: 0.0,
        };
        let g = PrivacyLoss {
            rho: 0.01,
            ..Default::default()
        };
        assert!(admit(&no_delta, &PrivacyLoss::default(), &g).unwrap().is_err());
        let budget = Budget {
            epsilon: 10.0,
            delta: 1e-6,
        };
        let one = spent(&g, &budget).unwrap();
        let two = spent(&g.plus(&g), &budget).unwrap();
        // Converting the summed ρ is tighter than adding converted ε's.
        assert!(two.epsilon < 2.0 * one.epsilon);
        // and agrees with the textbook upper bound ρ + 2√(ρ ln 1/δ).
        let bound = 0.02 + 2.0 * (0.02f64 * (1e6f64).ln()).sqrt();
        assert!(two.epsilon <= bound + 1e-9, "{} > {}", two.epsilon, bound);
    }

    #[test]
    fn negative_losses_are_refused() {
        let budget = Budget {
            epsilon: 1.0,
            delta: 0.0,
        };
        let bad = PrivacyLoss {
            epsilon: -0.5,
            ..Default::default()
        };
        assert!(admit(&budget, &PrivacyLoss::default(), &bad).is_err());
        assert!(
            PrivacyLoss {
                epsilon: f64::NAN,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
