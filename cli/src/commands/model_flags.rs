//! Flags that `tokumei anonymize` and `tokumei verify` share, so the model that is enforced and the model that
//! is re-checked are always spelled the same way.

/// l-diversity and t-closeness on every sensitive attribute.
#[derive(clap::Args, Debug)]
pub struct DiversityFlags {
    /// l of l-diversity (on every sensitive attribute).
    #[arg(long)]
    pub l: Option<u32>,
    /// l-diversity variant: distinct, entropy or recursive:C.
    #[arg(long = "l-variant", default_value = "distinct")]
    pub l_variant: String,
    /// t of t-closeness (on every sensitive attribute).
    #[arg(long)]
    pub t: Option<f64>,
    /// t-closeness ground distance: equal, ordered or hierarchical.
    #[arg(long = "t-distance", default_value = "equal")]
    pub t_distance: String,
}
