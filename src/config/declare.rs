//! The machinery behind `settings!`: from one declaration per setting it
//! derives the command-line flags and environment variables (clap), the
//! all-optional overrides that are layered (figment), the effective
//! `Settings` with their defaults, the range checks, and the table of
//! declarations that the example file, the README table and `config show`
//! are printed from. Nothing about a setting is written twice.

/// What the declarations say about one setting, beyond its Rust type.
#[derive(Debug)]
pub struct Declared {
    /// The file key; the flag is the same in kebab-case.
    pub key: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The placeholder in `--help`, e.g. `ADDR`.
    pub value_name: &'static str,
    /// The doc lines: the first is the summary (`--help`, README), all of
    /// them go into the example file.
    pub doc: &'static [&'static str],
    /// The allowed range of a number, checked at start.
    pub range: Option<(u64, u64)>,
    /// A list given comma-separated on the command line.
    pub list: bool,
    /// A value to show in the example file when the default is "off".
    pub example: Option<&'static str>,
}

/// Declares every setting. Each entry:
///
/// ```text
/// /// Summary line (the flag's help and the README's description).
/// ///
/// /// More lines for the example file.
/// key: Type = default_expression,
///     env "KAGGLEINGEST_KEY", value "PLACEHOLDER"
///     [, range LOW..=HIGH] [, delimiter ','] [, example "toml value"];
/// ```
macro_rules! settings {
    (@range) => { None };
    (@range $lo:literal, $hi:literal) => { Some(($lo, $hi)) };
    (@some) => { None };
    (@some $value:literal) => { Some($value) };
    (@list) => { false };
    (@list $d:literal) => { true };
    (@delimiter) => { None::<char> };
    (@delimiter $d:literal) => { Some($d) };

    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr,
            env $env:literal, value $value:literal
            $(, range $lo:literal ..= $hi:literal)?
            $(, delimiter $delim:literal)?
            $(, example $example:literal)?
            ;
    )*) => {
        /// Every setting, each optional: clap fills it from flags and the
        /// `KAGGLEINGEST_*` environment, and it is layered over the config
        /// file and the defaults. Field names are the file keys.
        #[derive(clap::Args, serde::Serialize, Debug, Default, Clone)]
        pub struct Overrides {
            $(
                $(#[doc = $doc])+
                // `hide_env_values`: `--help` must not print a password
                // from the environment (a PostgreSQL `db`).
                #[arg(long, global = true, env = $env, value_name = $value, hide_env_values = true)]
                #[arg(value_delimiter = settings!(@delimiter $($delim)?))]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }

        /// The effective settings after layering. Field names are the keys.
        #[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                pub $name: $ty,
            )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $($name: $default,)* }
            }
        }

        /// Every declaration, in the order of the example file.
        pub const DECLARED: &[$crate::config::declare::Declared] = &[$(
            $crate::config::declare::Declared {
                key: stringify!($name),
                env: $env,
                value_name: $value,
                doc: &[$($doc),+],
                range: settings!(@range $($lo, $hi)?),
                list: settings!(@list $($delim)?),
                example: settings!(@some $($example)?),
            },
        )*];

        impl Settings {
            /// Every setting as `(key, TOML value)`, in declaration order;
            /// `None` for one that is off.
            pub fn entries(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($name), $crate::config::declare::toml_text(&self.$name)),)*]
            }

            /// One line for each number outside its declared range.
            pub(crate) fn range_problems(&self) -> Vec<String> {
                #[allow(unused_mut)]
                let mut problems = Vec::new();
                $($(
                    if !($lo..=$hi).contains(&self.$name) {
                        problems.push(format!(
                            "{} = {} is out of range ({}-{})",
                            stringify!($name),
                            self.$name,
                            $lo,
                            $hi
                        ));
                    }
                )?)*
                problems
            }
        }

        /// Checks one key of the config file: known, and of its type.
        pub(crate) fn check_key(key: &str, value: toml::Value) -> Result<(), String> {
            use serde::Deserialize;
            match key {
                $(stringify!($name) => <$ty>::deserialize(value)
                    .map(drop)
                    .map_err(|e| e.message().to_owned()),)*
                _ => Err(format!(
                    "unknown setting; the settings are: {}",
                    DECLARED.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    };
}

/// `value` as a TOML value (`"text"`, `12`, `[]`); `None` when it is off.
pub fn toml_text<T: serde::Serialize>(value: &T) -> Option<String> {
    toml::Value::try_from(value).ok().map(|v| v.to_string())
}
