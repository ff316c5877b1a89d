//! The netlink message walk shared by the rtnetlink and FPM paths.

/// Splits a netlink datagram into its messages (each `nlmsg_len` long, the
/// next one 4-byte aligned). A message whose length is impossible ends the
/// walk; the kernel never sends one, so nothing valid is lost.
pub fn split_netlink_messages(mut datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if datagram.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        if len < 16 || len > datagram.len() {
            datagram = &[];
            return None;
        }
        let (message, rest) = datagram.split_at(len);
        let aligned = (len + 3) & !3;
        datagram = rest.get(aligned - len..).unwrap_or(&[]);
        Some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32, fill: u8) -> Vec<u8> {
        let mut m = len.to_ne_bytes().to_vec();
        m.resize(len as usize, fill);
        m
    }

    #[test]
    fn aligned_messages_are_split_at_their_lengths() {
        let mut datagram = message(17, 1);
        datagram.extend_from_slice(&[0; 3]);
        datagram.extend(message(20, 2));
        let parts: Vec<_> = split_netlink_messages(&datagram).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].len(), parts[1].len()), (17, 20));
        assert_eq!(parts[1][19], 2);
    }

    #[test]
    fn an_impossible_length_ends_the_walk() {
        let mut datagram = message(16, 1);
        datagram.extend(message(200, 2)[..40].iter());
        assert_eq!(split_netlink_messages(&datagram).count(), 1);
        assert_eq!(split_netlink_messages(&message(8, 0)).count(), 0);
    }
}
