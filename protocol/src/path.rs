//! The rules for paths and symlink targets inside a release.
//!
//! A release is installed into a directory that p2pd creates, so every entry must land inside
//! it, whatever the manifest says. The rules are lexical and strict:
//!
//! * An entry path is relative, `/`-separated, valid UTF-8 (guaranteed by its `String` type),
//!   at most [`PATH_BYTES_MAX`] bytes, each component at most [`PATH_COMPONENT_BYTES_MAX`]
//!   bytes, with no empty, `.` or `..` component, and no NUL, backslash or control character
//!   (a backslash is a separator on Windows hosts; a control character hides in terminals).
//! * **Symlinks are kept, never followed out.** A symlink's target must be relative, and
//!   resolving it from the link's own directory must stay inside the release while passing
//!   only through directories that the release itself contains (never through another
//!   symlink, a file, or a path the release does not have). The final component may be
//!   anything or nothing (a dangling link inside the release is harmless). Each symlink is
//!   checked on its own, so a chain of symlinks stays inside too. An absolute target or one
//!   that climbs out is refused, naming the link.

use std::fmt;

/// Longest path inside a release, in bytes (Linux `PATH_MAX`).
pub const PATH_BYTES_MAX: usize = 4096;
/// Longest path component, in bytes (Linux `NAME_MAX`).
pub const PATH_COMPONENT_BYTES_MAX: usize = 255;

/// Which path rule was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRule {
    /// The path is empty.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// A component is `..`.
    ParentComponent,
    /// A component is `.`.
    DotComponent,
    /// Two separators in a row, or a trailing separator.
    EmptyComponent,
    /// NUL, backslash or a control character.
    ForbiddenChar(char),
    /// Longer than [`PATH_BYTES_MAX`].
    TooLong,
    /// A component longer than [`PATH_COMPONENT_BYTES_MAX`].
    ComponentTooLong,
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("path is empty"),
            Self::Absolute => f.write_str("path is absolute"),
            Self::ParentComponent => f.write_str("path contains a '..' component"),
            Self::DotComponent => f.write_str("path contains a '.' component"),
            Self::EmptyComponent => f.write_str("path contains an empty component"),
            Self::ForbiddenChar(c) => write!(f, "path contains the forbidden character {c:?}"),
            Self::TooLong => write!(f, "path is longer than {PATH_BYTES_MAX} bytes"),
            Self::ComponentTooLong => write!(
                f,
                "a path component is longer than {PATH_COMPONENT_BYTES_MAX} bytes"
            ),
        }
    }
}

fn check_chars(s: &str) -> Result<(), PathRule> {
    match s
        .chars()
        .find(|&c| c == '\0' || c == '\\' || c.is_control())
    {
        Some(c) => Err(PathRule::ForbiddenChar(c)),
        None => Ok(()),
    }
}

/// Checks an entry path against the rules in the module docs.
pub fn check_entry_path(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(PathRule::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    check_chars(path)?;
    for component in path.split('/') {
        match component {
            "" => return Err(PathRule::EmptyComponent),
            "." => return Err(PathRule::DotComponent),
            ".." => return Err(PathRule::ParentComponent),
            c if c.len() > PATH_COMPONENT_BYTES_MAX => return Err(PathRule::ComponentTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of an entry path, `None` for a top-level entry.
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Why a symlink target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymlinkRule {
    /// The target is empty, too long or holds a forbidden character.
    Invalid(PathRule),
    /// The target starts with `/`.
    Absolute,
    /// Resolving the target climbs above the release root.
    Escapes,
    /// Resolving the target passes through `component`, which is not a directory of the
    /// release (a symlink, a file, or absent).
    ThroughNonDirectory(String),
}

impl fmt::Display for SymlinkRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(rule) => write!(f, "symlink target is invalid: {rule}"),
            Self::Absolute => f.write_str("symlink target is absolute"),
            Self::Escapes => f.write_str("symlink target points outside the release"),
            Self::ThroughNonDirectory(c) => write!(
                f,
                "symlink target passes through {c:?}, which is not a directory of the release"
            ),
        }
    }
}

/// Checks the target of the symlink at `link_path`. `is_dir(p)` answers whether the release
/// holds a directory entry at the release-relative path `p`.
///
/// Returns the release-relative path the target resolves to (`""` for the release root).
pub fn resolve_symlink_target(
    link_path: &str,
    target: &str,
    is_dir: impl Fn(&str) -> bool,
) -> Result<String, SymlinkRule> {
    if target.is_empty() {
        return Err(SymlinkRule::Invalid(PathRule::Empty));
    }
    if target.len() > PATH_BYTES_MAX {
        return Err(SymlinkRule::Invalid(PathRule::TooLong));
    }
    check_chars(target).map_err(SymlinkRule::Invalid)?;
    if target.starts_with('/') {
        return Err(SymlinkRule::Absolute);
    }
    let mut stack: Vec<&str> = match parent(link_path) {
        Some(p) => p.split('/').collect(),
        None => Vec::new(),
    };
    let components: Vec<&str> = target.split('/').collect();
    let last = components.len() - 1;
    for (i, component) in components.iter().enumerate() {
        match *component {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(SymlinkRule::Escapes);
                }
            }
            name => {
                if name.len() > PATH_COMPONENT_BYTES_MAX {
                    return Err(SymlinkRule::Invalid(PathRule::ComponentTooLong));
                }
                stack.push(name);
                if i != last {
                    let so_far = stack.join("/");
                    if !is_dir(&so_far) {
                        return Err(SymlinkRule::ThroughNonDirectory(so_far));
                    }
                }
            }
        }
    }
    Ok(stack.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_follow_the_rules() {
        assert_eq!(check_entry_path("a/b/c.txt"), Ok(()));
        assert_eq!(check_entry_path(""), Err(PathRule::Empty));
        assert_eq!(check_entry_path("/etc/passwd"), Err(PathRule::Absolute));
        assert_eq!(check_entry_path("a/../b"), Err(PathRule::ParentComponent));
        assert_eq!(check_entry_path(".."), Err(PathRule::ParentComponent));
        assert_eq!(check_entry_path("./a"), Err(PathRule::DotComponent));
        assert_eq!(check_entry_path("a//b"), Err(PathRule::EmptyComponent));
        assert_eq!(check_entry_path("a/"), Err(PathRule::EmptyComponent));
        assert_eq!(check_entry_path("a\\b"), Err(PathRule::ForbiddenChar('\\')));
        assert_eq!(check_entry_path("a\nb"), Err(PathRule::ForbiddenChar('\n')));
        assert_eq!(
            check_entry_path(&"x".repeat(256)),
            Err(PathRule::ComponentTooLong)
        );
        assert_eq!(check_entry_path(&"x/".repeat(2100)), Err(PathRule::TooLong));
    }

    fn dirs(list: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |p| list.contains(&p)
    }

    #[test]
    fn symlink_inside_release_is_kept() {
        let is_dir = dirs(&["bin", "lib"]);
        assert_eq!(
            resolve_symlink_target("bin/tool", "../lib/libx.so", &is_dir),
            Ok("lib/libx.so".into())
        );
        assert_eq!(resolve_symlink_target("top", ".", &is_dir), Ok("".into()));
        assert_eq!(
            resolve_symlink_target("bin/self", "./tool", &is_dir),
            Ok("bin/tool".into())
        );
        // Dangling inside the release is allowed.
        assert_eq!(
            resolve_symlink_target("bin/d", "missing", &is_dir),
            Ok("bin/missing".into())
        );
    }

    #[test]
    fn symlink_leaving_release_is_refused() {
        let is_dir = dirs(&["bin", "lib"]);
        assert_eq!(
            resolve_symlink_target("bin/x", "/etc/shadow", &is_dir),
            Err(SymlinkRule::Absolute)
        );
        assert_eq!(
            resolve_symlink_target("bin/x", "../../etc", &is_dir),
            Err(SymlinkRule::Escapes)
        );
        assert_eq!(
            resolve_symlink_target("x", "..", &is_dir),
            Err(SymlinkRule::Escapes)
        );
        // Lexically inside, but `link` is not a directory: following it then '..' could leave.
        assert_eq!(
            resolve_symlink_target("x", "link/../y", &is_dir),
            Err(SymlinkRule::ThroughNonDirectory("link".into()))
        );
        assert!(matches!(
            resolve_symlink_target("x", "", &is_dir),
            Err(SymlinkRule::Invalid(PathRule::Empty))
        ));
    }
}
