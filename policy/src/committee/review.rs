//! The committee's decision rule: who votes, and when the votes decide.
//!
//! Members assigned by the chair vote in favour or against, each with a comment; a member with a conflict
//! of interest recuses and neither votes nor counts toward the quorum. The rule is configurable because
//! committees' rules of procedure differ; the default — at least three voting members and two thirds in
//! favour — follows the common 審査委員会 practice. A review that does not reach the quorum cannot be
//! closed: the chair must assign more members rather than decide with too few.

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};

/// The quorum rule: at least `min_voting` voting members, and approval when the share in favour is at
/// least `approve_numerator / approve_denominator` (exact integer comparison: 2 of 3 is two thirds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumRule {
    /// Fewest members whose votes count (recused members do not).
    pub min_voting: u32,
    /// Numerator of the approval share.
    pub approve_numerator: u32,
    /// Denominator of the approval share.
    pub approve_denominator: u32,
}

impl Default for QuorumRule {
    fn default() -> Self {
        QuorumRule {
            min_voting: 3,
            approve_numerator: 2,
            approve_denominator: 3,
        }
    }
}

/// A member's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The member's username.
    pub member: String,
    /// In favour of approval.
    pub in_favour: bool,
    /// The member's comment (part of the committee's record).
    pub comment: String,
}

/// The count of a review's votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Members who voted.
    pub voting: u32,
    /// Votes in favour.
    pub in_favour: u32,
    /// Votes against.
    pub against: u32,
}

/// What the rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Approved (conditions follow).
    Approved,
    /// Refused.
    Refused,
}

impl QuorumRule {
    /// Refuses rules that could never decide or would approve on nothing.
    pub fn validate(&self) -> Result<()> {
        if self.min_voting == 0
            || self.approve_denominator == 0
            || self.approve_numerator == 0
            || self.approve_numerator > self.approve_denominator
        {
            return Err(PolicyError::Invalid(format!(
                "quorum rule needs at least one voting member and a share in (0, 1]; got {} voting, {}/{}",
                self.min_voting, self.approve_numerator, self.approve_denominator
            )));
        }
        Ok(())
    }

    /// Decides on a tally, or says why it cannot yet.
    pub fn decide(&self, tally: Tally) -> Result<Outcome> {
        if tally.voting < self.min_voting {
            return Err(PolicyError::QuorumNotMet(format!(
                "{} member(s) voted; the rule needs at least {}",
                tally.voting, self.min_voting
            )));
        }
        let favour = u64::from(tally.in_favour) * u64::from(self.approve_denominator);
        let needed = u64::from(self.approve_numerator) * u64::from(tally.voting);
        Ok(if favour >= needed {
            Outcome::Approved
        } else {
            Outcome::Refused
        })
    }
}

/// Counts votes (each member once; the caller has already excluded recused members).
pub fn tally(votes: &[Vote]) -> Tally {
    let in_favour = votes.iter().filter(|v| v.in_favour).count() as u32;
    let voting = votes.len() as u32;
    Tally {
        voting,
        in_favour,
        against: voting - in_favour,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(yes: u32, no: u32) -> Vec<Vote> {
        (0..yes)
            .map(|i| Vote {
                member: format!("y{i}"),
                in_favour: true,
                comment: String::new(),
            })
            .chain((0..no).map(|i| Vote {
                member: format!("n{i}"),
                in_favour: false,
                comment: String::new(),
            }))
            .collect()
    }

    #[test]
    fn default_rule_edges() {
        let rule = QuorumRule::default();
        assert_eq!(
            rule.decide(tally(&votes(2, 1))).ok(),
            Some(Outcome::Approved),
            "exactly two thirds"
        );
        assert_eq!(rule.decide(tally(&votes(3, 0))).ok(), Some(Outcome::Approved));
        assert_eq!(rule.decide(tally(&votes(1, 2))).ok(), Some(Outcome::Refused));
        assert_eq!(
            rule.decide(tally(&votes(3, 2))).ok(),
            Some(Outcome::Refused),
            "3/5 < 2/3"
        );
        assert_eq!(
            rule.decide(tally(&votes(4, 2))).ok(),
            Some(Outcome::Approved),
            "4/6 = 2/3"
        );
        assert_eq!(
            rule.decide(tally(&votes(5, 3))).ok(),
            Some(Outcome::Refused),
            "5/8 < 2/3"
        );
        assert_eq!(
            rule.decide(tally(&votes(2, 0))).err().map(|e| e.reason()),
            Some("QUORUM_NOT_MET")
        );
        assert_eq!(
            rule.decide(tally(&votes(0, 0))).err().map(|e| e.reason()),
            Some("QUORUM_NOT_MET")
        );
    }

    #[test]
    fn configurable_rule() {
        let majority = QuorumRule {
            min_voting: 5,
            approve_numerator: 1,
            approve_denominator: 2,
        };
        assert!(majority.validate().is_ok());
        assert_eq!(majority.decide(tally(&votes(3, 2))).ok(), Some(Outcome::Approved));
        assert!(majority.decide(tally(&votes(3, 1))).is_err());
        assert!(
            QuorumRule {
                min_voting: 0,
                ..majority
            }
            .validate()
            .is_err()
        );
        assert!(
            QuorumRule {
                approve_numerator: 3,
                approve_denominator: 2,
                ..majority
            }
            .validate()
            .is_err()
        );
    }
}
