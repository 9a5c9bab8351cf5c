//! The pure parts of pod networking: CIDRs and their per-tenant slices, interface, table and
//! namespace names, the CNI netconf and results, and the nftables ruleset that keeps tenants apart.

use super::*;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parse `A.B.C.D/N`; the host bits must be zero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| {
            if a.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("{s:?} is not IPv4")
            } else {
                format!("{s:?}: bad address")
            }
        })?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        let c = Cidr { addr, prefix };
        if c.addr != c.network() {
            return Err(format!(
                "{s:?} has host bits set (network is {})",
                c.network()
            ));
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// How many /24s this prefix holds (0 when it is longer than /24).
    pub fn slices(&self) -> u32 {
        if self.prefix > 24 {
            0
        } else {
            1u32 << (24 - self.prefix)
        }
    }

    /// The `index`th /24 of this prefix.
    pub fn slice(&self, index: u32) -> Option<Cidr> {
        (index < self.slices()).then(|| Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) + (index << 8)),
            prefix: 24,
        })
    }

    /// The `n`th address of this prefix (`n` = 1: the gateway).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Cidr::parse(&s)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// Parse and check an agent's pod CIDR: IPv4, prefix at most /24.
pub fn parse_pod_cidr(s: &str) -> Result<Cidr, String> {
    let c = Cidr::parse(s)?;
    if c.prefix > 24 {
        return Err(format!(
            "pod cidr {c} is longer than /24 (each tenant needs a /24)"
        ));
    }
    Ok(c)
}

/// The canonical name of a tenant: the system tenant `""` is `"system"`.
pub fn tenant_key(tenant: &str) -> &str {
    if tenant.is_empty() {
        SYSTEM_TENANT
    } else {
        tenant
    }
}

pub(super) fn hex8(input: &str) -> String {
    Sha256::digest(input.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tenant's bridge on an agent with this pod CIDR: `atl` + 8 hex digits (11 characters).
pub fn bridge_name(pod_cidr: &Cidr, tenant: &str) -> String {
    format!("atl{}", hex8(&format!("{pod_cidr}/{}", tenant_key(tenant))))
}

/// The nftables table (family inet) of an agent with this pod CIDR.
pub fn table_name(pod_cidr: &Cidr) -> String {
    format!("atl_{}", hex8(&pod_cidr.to_string()))
}

/// A pod's netns name: `atl-` + the first 12 characters of its uid without dashes.
pub fn netns_name(pod_uid: &str) -> String {
    let id: String = pod_uid.chars().filter(|c| *c != '-').take(12).collect();
    format!("atl-{id}")
}

/// A pod uid must do as a CNI container id, a netns name and a file name.
pub(super) fn valid_uid(uid: &str) -> bool {
    uid.len() <= 128
        && uid
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The lowest slice index not in `used`, below `slices`.
pub(super) fn free_index(used: impl Iterator<Item = u32>, slices: u32) -> Option<u32> {
    let used: std::collections::BTreeSet<u32> = used.collect();
    (0..slices).find(|i| !used.contains(i))
}

/// One tenant's network on this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantNet {
    /// Slice index in the pod CIDR.
    pub index: u32,
    /// Its bridge.
    pub bridge: String,
    /// Its /24.
    pub subnet: Cidr,
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
}

impl TenantNet {
    /// The network of slice `index` of `pod_cidr` for `tenant`.
    pub fn new(pod_cidr: &Cidr, tenant: &str, index: u32) -> Option<Self> {
        let subnet = pod_cidr.slice(index)?;
        Some(TenantNet {
            index,
            bridge: bridge_name(pod_cidr, tenant),
            subnet,
            gateway: subnet.host(1),
        })
    }
}

/// The CNI network configuration for a tenant's network (`prev`: the ADD result, for DEL).
pub fn netconf(t: &TenantNet, ipam_dir: &Path, prev: Option<&Value>) -> Value {
    let mut conf = json!({
        "cniVersion": CNI_VERSION,
        "name": t.bridge,
        "type": "bridge",
        "bridge": t.bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{
                "subnet": t.subnet.to_string(),
                "rangeStart": t.subnet.host(2).to_string(),
                "rangeEnd": t.subnet.host(254).to_string(),
                "gateway": t.gateway.to_string(),
            }]],
            "routes": [{ "dst": "0.0.0.0/0", "gw": t.gateway.to_string() }],
            "dataDir": ipam_dir.to_string_lossy(),
        },
    });
    if let (Some(prev), Some(obj)) = (prev, conf.as_object_mut()) {
        obj.insert("prevResult".into(), prev.clone());
    }
    conf
}

/// The first IPv4 address (and its gateway, if given) of a CNI ADD result (0.4.0 or 1.0.0).
pub fn parse_cni_result(stdout: &[u8]) -> Result<(Ipv4Addr, Option<Ipv4Addr>), String> {
    let v: Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    let ips = v
        .get("ips")
        .and_then(Value::as_array)
        .ok_or("no \"ips\" in the result")?;
    ips.iter()
        .find_map(|ip| {
            let addr = ip.get("address")?.as_str()?;
            let addr: Ipv4Addr = addr.split_once('/').map_or(addr, |(a, _)| a).parse().ok()?;
            let gw = ip
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok());
            Some((addr, gw))
        })
        .ok_or_else(|| "no IPv4 address in the result".into())
}

/// A CNI error result: code, msg, details.
pub fn parse_cni_error(stdout: &[u8]) -> Option<(u64, String, String)> {
    #[derive(Deserialize)]
    struct CniError {
        #[serde(default)]
        code: u64,
        msg: String,
        #[serde(default)]
        details: String,
    }
    let e: CniError = serde_json::from_slice(stdout).ok()?;
    Some((e.code, e.msg, e.details))
}

/// Whether `ip -j -4 addr show` output lists `ip`.
pub(super) fn addr_listed(ip_json: &[u8], ip: Ipv4Addr) -> bool {
    let Ok(Value::Array(links)) = serde_json::from_slice::<Value>(ip_json) else {
        return false;
    };
    let want = ip.to_string();
    links
        .iter()
        .filter_map(|l| l.get("addr_info").and_then(Value::as_array))
        .flatten()
        .any(|a| a.get("local").and_then(Value::as_str) == Some(want.as_str()))
}

/// The agent's whole nftables table, as an `nft -f` script that replaces it atomically.
///
/// `forward`: traffic entering one tenant bridge may not leave by another (same-bridge traffic,
/// which br_netfilter shows with the bridge as both in- and out-interface, is untouched).
/// `input`: a tenant bridge may not address the host at pod-CIDR addresses outside its own
/// subnet (the other tenants' gateways, present and future).
pub fn nft_script(table: &str, pod_cidr: &Cidr, tenants: &[TenantNet]) -> String {
    let mut t: Vec<&TenantNet> = tenants.iter().collect();
    t.sort_by_key(|t| t.index);
    let mut s = format!("table inet {table} {{}}\ndelete table inet {table}\n");
    s.push_str(&format!("table inet {table} {{\n"));
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n");
    for a in &t {
        let others: Vec<String> = t
            .iter()
            .filter(|b| b.bridge != a.bridge)
            .map(|b| format!("\"{}\"", b.bridge))
            .collect();
        if !others.is_empty() {
            s.push_str(&format!(
                "\t\tiifname \"{}\" oifname {{ {} }} drop\n",
                a.bridge,
                others.join(", ")
            ));
        }
    }
    s.push_str("\t}\n");
    s.push_str("\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n");
    for a in &t {
        s.push_str(&format!(
            "\t\tiifname \"{}\" ip daddr {pod_cidr} ip daddr != {} drop\n",
            a.bridge, a.subnet
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

/// An `nft -f` script that removes the table if it exists.
pub(super) fn nft_delete_script(table: &str) -> String {
    format!("table inet {table} {{}}\ndelete table inet {table}\n")
}
