//! What an image is to the nodelet, and which program a container runs (pure).
//!
//! There is no image store: an image maps to one locally built binary, named like the image's last
//! path segment (`registry.k8s.io/e2e-test-images/agnhost:2.56` → `agnhost`), which sits in the
//! container's file system where the real image has it (`/agnhost`), with the image's entrypoint and
//! default arguments. The container's `command` and `args` combine with them as a runtime combines
//! them with the image config (Kubernetes' "Define a command and arguments for a container"):
//!
//! | command | args | runs |
//! |---------|------|------|
//! | –       | –    | entrypoint + image cmd |
//! | set     | –    | command (the image cmd is dropped) |
//! | –       | set  | entrypoint + args |
//! | set     | set  | command + args |
//!
//! Invariant: `plan_exec` names the image's binary only for the image's own path or its bare name;
//! every other program (`/bin/sh`) is looked up in the container's file system, never the image's
//! binary by accident.

/// The directories a bare program name is searched in, in the container's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One image as the nodelet knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// File name of the local binary (and the image's last path segment).
    pub binary: String,
    /// Where the image holds the binary (absolute).
    pub path: String,
    /// The image's ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
}

/// `registry:5000/org/weft-agent:v1@sha256:…` → `weft-agent`.
pub fn image_binary_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

/// The image config of `image`: the upstream test images as their Dockerfiles build them, any other
/// image as a binary at `/usr/local/bin/<name>` that is its own entrypoint.
pub fn image_spec(image: &str) -> ImageSpec {
    let binary = image_binary_name(image);
    let (path, cmd): (String, &[&str]) = match binary.as_str() {
        // test/images/agnhost/Dockerfile: ENTRYPOINT ["/agnhost"], CMD ["pause"].
        "agnhost" => ("/agnhost".into(), &["pause"]),
        // build/pause/Dockerfile: ENTRYPOINT ["/pause"].
        "pause" => ("/pause".into(), &[]),
        other => (format!("/usr/local/bin/{other}"), &[]),
    };
    ImageSpec {
        entrypoint: vec![path.clone()],
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        binary,
        path,
    }
}

/// The argument vector a container runs (see the table in the module docs), before `$(VAR)`
/// expansion. Empty when neither the container nor the image says what to run.
pub fn plan_argv(
    image: &ImageSpec,
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    match (command, args) {
        (Some(c), a) if !c.is_empty() => c.iter().chain(a.unwrap_or_default()).cloned().collect(),
        (_, Some(a)) if !a.is_empty() => image.entrypoint.iter().chain(a).cloned().collect(),
        _ => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// How `argv[0]` is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exec {
    /// The image's binary, from the file the nodelet holds open.
    Image,
    /// The first of these paths that exists in the container's file system.
    Search(Vec<String>),
}

/// Resolves `argv0` as `execvp` would in the image: the image's own path or bare name is the image's
/// binary; a name with a slash is that path (relative to the working directory); a bare name is
/// searched in `path` (the container's `PATH`).
pub fn plan_exec(image: &ImageSpec, argv0: &str, path: &str) -> Exec {
    if argv0 == image.path || argv0 == image.binary {
        return Exec::Image;
    }
    if argv0.contains('/') {
        return Exec::Search(vec![argv0.to_string()]);
    }
    Exec::Search(
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn image_names_map_to_binaries() {
        assert_eq!(image_binary_name("weft.dev/weft-agent:0.1.0"), "weft-agent");
        assert_eq!(
            image_binary_name("localhost:5000/a/b/weft-operator@sha256:abc"),
            "weft-operator"
        );
        assert_eq!(image_binary_name("busybox"), "busybox");
    }

    #[test]
    fn upstream_images_have_their_dockerfile_layout() {
        let a = image_spec("registry.k8s.io/e2e-test-images/agnhost:2.56");
        assert_eq!(
            (a.path.as_str(), a.binary.as_str()),
            ("/agnhost", "agnhost")
        );
        assert_eq!((a.entrypoint, a.cmd), (v(&["/agnhost"]), v(&["pause"])));
        let p = image_spec("registry.k8s.io/pause:3.10");
        assert_eq!((p.entrypoint, p.cmd), (v(&["/pause"]), v(&[])));
        let k = image_spec("registry.k8s.io/kube-proxy:v1.34.4");
        assert_eq!(k.path, "/usr/local/bin/kube-proxy");
    }

    #[test]
    fn command_and_args_combine_with_the_image_config() {
        let a = image_spec("agnhost");
        let cmd = v(&["/agnhost", "serve-hostname"]);
        let args = v(&["--port", "80"]);
        assert_eq!(plan_argv(&a, None, None), v(&["/agnhost", "pause"]));
        assert_eq!(
            plan_argv(&a, Some(&cmd), None),
            cmd,
            "the image CMD is dropped"
        );
        assert_eq!(
            plan_argv(&a, None, Some(&args)),
            v(&["/agnhost", "--port", "80"])
        );
        assert_eq!(
            plan_argv(&a, Some(&cmd), Some(&args)),
            v(&["/agnhost", "serve-hostname", "--port", "80"])
        );
        assert_eq!(
            plan_argv(&a, Some(&[]), Some(&[])),
            v(&["/agnhost", "pause"]),
            "empty lists count as unset, as in the API"
        );
    }

    #[test]
    fn only_the_image_path_or_name_is_the_image_binary() {
        let a = image_spec("agnhost");
        assert_eq!(plan_exec(&a, "/agnhost", DEFAULT_PATH), Exec::Image);
        assert_eq!(plan_exec(&a, "agnhost", DEFAULT_PATH), Exec::Image);
        assert_eq!(
            plan_exec(&a, "/bin/sh", DEFAULT_PATH),
            Exec::Search(v(&["/bin/sh"]))
        );
        assert_eq!(
            plan_exec(&a, "sh", "/usr/bin:/bin/"),
            Exec::Search(v(&["/usr/bin/sh", "/bin/sh"]))
        );
        assert_eq!(
            plan_exec(&a, "/usr/local/bin/agnhost", DEFAULT_PATH),
            Exec::Search(v(&["/usr/local/bin/agnhost"])),
            "another path is another file"
        );
    }
}
