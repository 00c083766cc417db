"""Golden Received-header cases: one row per MTA shape (spec/received-examples.md and
more seen in real mail). Each row: (name, header value, expected fields). Fields not
named in the expectation are not checked. `ip` is a string or None."""

CASES = [
    (
        "postfix-tls",
        "from out-9.example.net (out-9.example.net [192.0.2.192]) (using TLSv1.2 with cipher"
        " ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)) (No client certificate requested) by"
        " mx.example.org (Postfix) with ESMTPS id C7B1A30014A for <x@example.org>;"
        " Tue,  3 Jul 2018 14:40:19 +0200 (CEST)",
        dict(ip="192.0.2.192", from_helo="out-9.example.net", rdns="out-9.example.net",
             by="mx.example.org", with_proto="ESMTPS", for_addr="x@example.org", has_from=True),
    ),
    (
        "postfix-unknown-ipv6",
        "from host.example.nl (unknown [IPv6:2001:db8:aab6:26d:5054:ff:fed1:1da2]) by"
        " mx1.example.org (Postfix) with ESMTPS id CF0171862 for <a@example.org>;"
        " Mon, 1 Jan 2024 00:00:00 +0000",
        dict(ip="2001:db8:aab6:26d:5054:ff:fed1:1da2", from_helo="host.example.nl", rdns=None,
             with_proto="ESMTPS"),
    ),
    (
        "postfix-helo-literal",
        "from [127.0.0.1] (unknown [198.51.100.131]) by mail01.example.org (Postfix) with"
        " ESMTPSA id 4F0B2; Wed, 2 Feb 2022 10:00:00 +0100",
        dict(ip="198.51.100.131", from_helo="[127.0.0.1]", rdns=None, with_proto="ESMTPSA"),
    ),
    (
        "postfix-authenticated",
        "from [192.168.1.10] (unknown [198.51.100.5]) (Authenticated sender: user@example.org)"
        " by smtp.example.org (Postfix) with ESMTPSA id 9A1B2C for <b@example.net>; Thu, 1 Jan 2015",
        dict(ip="198.51.100.5", from_helo="[192.168.1.10]", for_addr="b@example.net"),
    ),
    (
        "postfix-pickup-by-only",
        "by mail.example.com (Postfix, from userid 1000) id 2F5C1A0; Fri, 5 May 2023 10:00:00 +0000",
        dict(ip=None, from_helo=None, has_from=False, by="mail.example.com", with_proto=None),
    ),
    (
        "exim-port-helo",
        "from localhost ([127.0.0.1]:49019 helo=hummus.example.ac.uk) by hummus.example.ac.uk with"
        " esmtp (Exim 4.91) (envelope-from <a@example.ac.uk>) id 1fZ55o-0006DP-3H for"
        " <b@example.ac.uk>; Tue, 03 Jul 2018 13:40:19 +0100",
        dict(ip="127.0.0.1", from_helo="hummus.example.ac.uk", rdns="localhost",
             with_proto="ESMTP", by="hummus.example.ac.uk", for_addr="b@example.ac.uk"),
    ),
    (
        "exim-ipv6-port",
        "from smtp.example.org ([2001:db8:31:0:48:4558:736d:7470]:38689 helo=mx.example.org) by"
        " lists.example.net with esmtpsa (TLS1.3:TLS_AES_256_GCM_SHA384:256) (Exim 4.91)"
        " (envelope-from <a@example.org>) id 1fZ5; Tue, 03 Jul 2018 13:40:19 +0100",
        dict(ip="2001:db8:31:0:48:4558:736d:7470", from_helo="mx.example.org",
             rdns="smtp.example.org", with_proto="ESMTPSA"),
    ),
    (
        "exim-no-rdns",
        "from [203.0.113.26] (helo=host) by lists.example.net with smtp (Exim 3.31) id"
        " 18t2z0-0001NX-00 for <l@example.net>; Mon, 10 Mar 2003 10:00:00 +0000",
        dict(ip="203.0.113.26", from_helo="host", rdns=None, with_proto="SMTP"),
    ),
    (
        "exim-local",
        "from user by host.example.net with local (Exim 4.92) (envelope-from <user@host.example.net>)"
        " id 1abcDE-000123-Fg; Sat, 1 Jun 2019 12:00:00 +0000",
        dict(ip=None, from_helo="user", has_from=True, with_proto="LOCAL"),
    ),
    (
        "sendmail-may-be-forged",
        "from mail1.example.com (host66.example.com [198.51.100.66] (may be forged)) by"
        " relay.example.org (8.11.6/8.11.6) with ESMTP id h2F0c2x31856 for <a@example.org>;"
        " Fri, 14 Mar 2003 19:38:02 -0500",
        dict(ip="198.51.100.66", from_helo="mail1.example.com", rdns="host66.example.com",
             with_proto="ESMTP", by="relay.example.org"),
    ),
    (
        "sendmail-ident",
        "from one.example.com (IDENT:qmailr@one.example.com [192.0.2.115]) by relay.example.org"
        " (8.9.3/8.9.3) with SMTP id QAA01234; Fri, 14 Mar 2003 19:38:02 -0500",
        dict(ip="192.0.2.115", from_helo="one.example.com", rdns="one.example.com"),
    ),
    (
        "sendmail-local-no-ip",
        "from localhost (root@localhost) by host.example.org (8.14.4/8.14.4/Submit) id r1;"
        " Sun, 1 Dec 2013 00:00:00 +0000",
        dict(ip=None, from_helo="localhost", has_from=True),
    ),
    (
        "qmail",
        "from unknown (HELO feux01a-isp) (203.0.113.210) by mail.example.net with SMTP;"
        " 1 Nov 2003 07:05:19 -0000",
        dict(ip="203.0.113.210", from_helo="feux01a-isp", rdns=None, with_proto="SMTP"),
    ),
    (
        "qmail-remoteinfo",
        "from mx.example.com (HELO localhost) (someuser@203.0.113.5) by mail.example.net with"
        " SMTP; 1 Nov 2003 07:05:19 -0000",
        dict(ip="203.0.113.5", from_helo="localhost", rdns="mx.example.com"),
    ),
    (
        "qmail-local",
        "(qmail 27981 invoked by uid 225); 1 Nov 2003 07:05:19 -0000",
        dict(ip=None, from_helo=None, has_from=False, by=None),
    ),
    (
        "exchange-bare-ips",
        "from localhost (10.202.227.76) by ex01.example.com (192.0.2.240) with Microsoft SMTP"
        " Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) id 15.1.2507.31;"
        " Tue, 3 Oct 2023 17:17:43 +0100",
        dict(ip="10.202.227.76", from_helo="localhost", rdns=None, by="ex01.example.com",
             with_proto="MICROSOFT"),
    ),
    (
        "exchange-online-ipv6",
        "from BN8NAM11FT037.eop-nam11.prod.protection.outlook.com (2001:db8:408:c0:cafe::60) by"
        " BN8PR15CA0020.outlook.office365.com (2001:db8:408:c0::33) with Microsoft SMTP Server"
        " (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.5081.18 via"
        " Frontend Transport; Wed, 2 Mar 2022 10:00:00 +0000",
        dict(ip="2001:db8:408:c0:cafe::60",
             from_helo="BN8NAM11FT037.eop-nam11.prod.protection.outlook.com",
             by="BN8PR15CA0020.outlook.office365.com"),
    ),
    (
        "exchange-link-local-zone",
        "from X ([fe80::a639:b02c:5189:7140%7]) by X ([fe80::a639:b02c:5189:7140%7]) with mapi"
        " id 15.20.7202.031; Tue, 23 Jan 2024 10:00:00 +0000",
        dict(ip="fe80::a639:b02c:5189:7140", from_helo="X", by="X", with_proto="MAPI"),
    ),
    (
        "exchange-smtpsvc",
        "from mail.example.com ([192.0.2.5]) by exch.example.net with Microsoft"
        " SMTPSVC(6.0.3790.4675); Mon, 1 Feb 2010 10:00:00 +0000",
        dict(ip="192.0.2.5", from_helo="mail.example.com"),
    ),
    (
        "gmail-mx-trailing-dot",
        "from mga07.example.com (mga07.example.com. [198.51.100.100]) by mx.google.com with"
        " ESMTPS id n9si146219pll.307.2017.09.27.16.56.22 for <a@example.org> (version=TLS1_2"
        " cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128/128); Wed, 27 Sep 2017 16:56:22 -0700 (PDT)",
        dict(ip="198.51.100.100", from_helo="mga07.example.com", rdns="mga07.example.com",
             by="mx.google.com", for_addr="a@example.org"),
    ),
    (
        "gmail-internal-by-only",
        "by 2002:a05:6402:1234:b0:5f:1234:5678 with SMTP id abc123; Wed, 27 Sep 2017 16:56:22 -0700",
        dict(ip=None, has_from=False, by="2002:a05:6402:1234:b0:5f:1234:5678", with_proto="SMTP"),
    ),
    (
        "junk-helo-address",
        "from someone@example.com ([203.0.113.94]) by mx.google.com with ESMTPS id x1;"
        " Mon, 1 Jan 2018 00:00:00 +0000",
        dict(ip="203.0.113.94", from_helo="someone@example.com"),
    ),
    (
        "junk-space-in-comment",
        "from scientist-2.lan ( [192.0.2.65]) by mx.example.net with ESMTP id y2;"
        " Mon, 1 Jan 2018 00:00:00 +0000",
        dict(ip="192.0.2.65", from_helo="scientist-2.lan"),
    ),
    (
        "haraka",
        "from aaa.example ([192.0.2.1]) by localhost.localdomain (Haraka/2.8.18) with ESMTPA id"
        " 349C9C2B-1234-4AAA-9EDB-3EF14038C344.1 envelope-from <a@aaa.example> (authenticated"
        " bits=0); Tue, 01 May 2018 10:00:00 +0000",
        dict(ip="192.0.2.1", from_helo="aaa.example", with_proto="ESMTPA"),
    ),
    (
        "qmqp-no-parentheses",
        "from asx121.example.com [192.0.2.113] by mx.example.net with QMQP; 1 Nov 2003",
        dict(ip="192.0.2.113", from_helo="asx121.example.com", with_proto="QMQP"),
    ),
    (
        "communigate-port-helo",
        "from [10.128.128.81]:50999 (HELO intra.example.com) by av4 ([10.128.128.74]:25) with"
        " ESMTP id 1234 for x@example.com; Mon, 1 Jan 2018 00:00:00 +0000",
        dict(ip="10.128.128.81", from_helo="intra.example.com", rdns=None, by="av4",
             for_addr="x@example.com"),
    ),
    (
        "port-after-fifth-dot",
        "from helene8.example.net (helene.example.ms) [10.0.8.6.13219] by mx.example.net"
        " with SMTP; 1 Jan 2000",
        dict(ip="10.0.8.6", from_helo="helene8.example.net", rdns="helene.example.ms"),
    ),
    (
        "softdnserr-v4-mapped",
        "from example.com (softdnserr [::ffff:198.51.100.67]) by mx.example.net with ESMTP;"
        " 1 Jan 2000",
        dict(ip="198.51.100.67", from_helo="example.com", rdns=None),
    ),
    (
        "courier-v4-mapped",
        "from mail.example.com (mail.example.com [::ffff:192.0.2.5]) (TLS: TLSv1.2,256bits,"
        "ECDHE-RSA-AES256-GCM-SHA384) by mx.example.net with ESMTPS; Mon, 01 Jan 2018",
        dict(ip="192.0.2.5", rdns="mail.example.com"),
    ),
    (
        "upper-case-keywords",
        "FROM relay.example.edu (relay.example.edu [192.0.2.9]) BY mx.example.net ID 5E1C3 ;"
        " Mon, 1 Jan 2018",
        dict(ip="192.0.2.9", from_helo="relay.example.edu", by="mx.example.net", with_proto=None),
    ),
    (
        "yahoo-bare-ip-from",
        "from 192.0.2.10 by sonic.gate.mail.ne1.yahoo.com with HTTP; Mon, 1 Jan 2018",
        dict(ip="192.0.2.10", from_helo="192.0.2.10", with_proto="HTTP"),
    ),
    (
        "domino",
        "from mail.example.com ([192.0.2.7]) by notes.example.net (Lotus Domino Release 8.5.3FP6)"
        " with ESMTP id 2014010112000000-1234 ; Wed, 1 Jan 2014 12:00:00 +0100",
        dict(ip="192.0.2.7", from_helo="mail.example.com", by="notes.example.net"),
    ),
    (
        "kerio-same-literal",
        "from [192.0.2.44] ([192.0.2.44]) by mail.example.com (Kerio Connect 8.0.2) with ESMTPSA;"
        " Mon, 1 Jan 2018",
        dict(ip="192.0.2.44", from_helo="[192.0.2.44]"),
    ),
    (
        "proofpoint-internal",
        "from pps.filterd (m0001.ppops.net [127.0.0.1]) by m0001.ppops.net (8.16.0.42/8.16.0.42)"
        " with SMTP id 30ABCD; Mon, 1 Jan 2018",
        dict(ip="127.0.0.1", from_helo="pps.filterd", rdns="m0001.ppops.net"),
    ),
    (
        "cyrus-lmtp-no-proto",
        "from mailfrontend1 ([10.202.2.160]) by compute3.internal (LMTPProxy); Tue, 2 Jan 2018",
        dict(ip="10.202.2.160", from_helo="mailfrontend1", by="compute3.internal", with_proto=None),
    ),
    (
        "opensmtpd",
        "from mail.example.org (mail.example.org [2001:db8::25]) by mx.example.net (OpenSMTPD)"
        " with ESMTPS id 5d8a9f5a (TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256:NO) for"
        " <a@example.net>; Mon, 1 Jan 2018",
        dict(ip="2001:db8::25", from_helo="mail.example.org", for_addr="a@example.net"),
    ),
    (
        "literal-with-port-in-tcp-info",
        "from relay.example.com (relay.example.com [192.0.2.33]:25) by mx.example.net with ESMTP;",
        dict(ip="192.0.2.33", rdns="relay.example.com"),
    ),
    (
        "helo-is-keyword",
        "from by (by.example.com [203.0.113.8]) by mx.example.net with ESMTP;",
        dict(ip="203.0.113.8", from_helo="by", by="mx.example.net"),
    ),
    (
        "missing-date",
        "from a.example (a.example [192.0.2.77]) by mx.example.net with ESMTP id Q",
        dict(ip="192.0.2.77", from_helo="a.example", with_proto="ESMTP"),
    ),
    (
        # An unclosed comment may have been opened by the sender's HELO, hiding where the
        # MTA's TCP-info starts: the peer is unreadable (and the walk stops there).
        "garbled-date-and-unclosed-comment",
        "from a.example (a.example [192.0.2.78] by mx.example.net ;;; 99 Foo 20xx ((",
        dict(ip=None, from_helo="a.example"),
    ),
]

# Attacker's shapes (adversarial.md §9): a trusted hop of each MTA family, written about a
# connection from 203.0.113.5 whose client put 192.0.2.99 (an address whose SPF it controls)
# into every sender-chosen field it could reach. The peer is 203.0.113.5, or None where
# the MTA recorded no peer the parser can tell apart from the sender's text (the walk stops).
PEER = "203.0.113.5"
ATTACKS = [
    ("exim-no-rdns-helo-literal",
     "from [203.0.113.5] (helo=[192.0.2.99]) by mx.example.org with esmtp (Exim 4.96) id 1qA; d", PEER),
    ("exim-rdns-helo-literal",
     "from host.example ([203.0.113.5]:4321 helo=[192.0.2.99]) by mx.example.org with esmtps"
     " (TLS1.3) (Exim 4.96) id 1qA; d", PEER),
    ("exim-unknown-family-helo-equals",
     "from [203.0.113.5] (helo=[192.0.2.99]) by relay.example.org with esmtp id 1qA; d", PEER),
    ("qmail-helo-literal",
     "from unknown (HELO [192.0.2.99]) (203.0.113.5) by mail.example.net with SMTP; d", PEER),
    ("qmail-helo-injects-a-comment",
     "from unknown (HELO x) ([192.0.2.99]) (203.0.113.5) by mail.example.net with SMTP; d", PEER),
    ("messagelabs-helo-literal",
     "from unknown (HELO [192.0.2.99]) (203.0.113.5) by server-4.tower-27.messagelabs.com with"
     " DHE-RSA-AES256-SHA encrypted SMTP; d", PEER),
    ("gmx-ehlo-literal",
     "from host.example (EHLO [192.0.2.99]) [203.0.113.5] by mail.gmx.net (mp033) with SMTP; d", PEER),
    ("ionos-helo-literal",
     "from [203.0.113.5] (helo=[192.0.2.99]) by mxeu2.kundenserver.de with ESMTP (Nemesis), id 0M; d", PEER),
    ("communigate-account-and-helo",
     "from [203.0.113.5] (account u@192.0.2.99 HELO [192.0.2.99]) by mx.example.org"
     " (CommuniGate Pro SMTP 6.3) with ESMTPSA id 1; d", PEER),
    ("communigate-helo-injects-a-comment",
     "from [203.0.113.5] (HELO x) ([192.0.2.99] verified) by mx.example.org (CommuniGate Pro SMTP"
     " 6.3) with ESMTP id 1; d", PEER),
    ("bare-helo-word", "from mail.example HELO 192.0.2.99 by mx.example.org with SMTP; d", None),
    ("bare-ehlo-literal", "from mail.example EHLO [192.0.2.99] by mx.example.org with ESMTP; d", None),
    ("claiming-to-be",
     'from host.example(203.0.113.5), claiming to be "[192.0.2.99]" via SMTP by mx.example.org,'
     " id smtpd1; d", PEER),
    ("postfix-helo-injects-tcp-info",
     "from x (unknown [192.0.2.99]) (unknown [203.0.113.5]) by mx.example.org (Postfix) with"
     " ESMTP id 1; d", PEER),
    ("postfix-helo-injects-by",
     "from a (b [192.0.2.99]) by fake.example (unknown [203.0.113.5]) by mx.example.org (Postfix)"
     " with ESMTP id 1; d", PEER),
    ("postfix-helo-opens-a-comment",
     "from a (b [192.0.2.99]) (c (unknown [203.0.113.5]) by mx.example.org (Postfix) with ESMTP"
     " id 1; d", None),
    ("postfix-helo-closes-a-comment",
     "from a) (b [192.0.2.99] (unknown [203.0.113.5]) by mx.example.org (Postfix) with ESMTP id 1; d",
     None),
    ("postfix-helo-stray-bracket",
     "from a [192.0.2.99 (unknown [203.0.113.5]) by mx.example.org (Postfix) with ESMTP id 1; d", PEER),
    ("postfix-helo-semicolon-and-open-comment",
     "from a (b [192.0.2.99]) by x (Postfix) with ESMTP id 1; d (c (unknown [203.0.113.5]) by mx.example.org"
     " (Postfix) with ESMTP id 2; Mon, 1 Jan 2024 00:00:00 +0000", None),
    ("postfix-helo-semicolon",
     "from a; (b [192.0.2.99]) (unknown [203.0.113.5]) by mx.example.org (Postfix) with ESMTP id 1;"
     " Mon, 1 Jan 2024 00:00:00 +0000", PEER),
    ("postfix-helo-literal-without-tcp-info",
     "from [192.0.2.99] by mx.example.org (Postfix) with ESMTP id 1; d", None),
    ("postfix-client-certificate-name",
     'from h (h [203.0.113.5]) (using TLSv1.3) (Client CN "[192.0.2.99]", Issuer "x" (verified OK))'
     " by mx.example.org (Postfix) with ESMTPS id 1; d", PEER),
    ("postfix-authenticated-sender",
     "from h (unknown [203.0.113.5]) (Authenticated sender: [192.0.2.99]) by mx.example.org"
     " (Postfix) with ESMTPSA id 1; d", PEER),
    ("sendmail-ident-with-literal",
     "from h (IDENT:x [192.0.2.99] y@h [203.0.113.5]) by mx.example.org (8.17.1/8.17.1) with ESMTP"
     " id 1; d", None),
    ("sendmail-helo-literal",
     "from [192.0.2.99] (h.example [203.0.113.5] (may be forged)) by mx.example.org (8.17.1/8.17.1)"
     " with ESMTP id 1; d", PEER),
    ("exchange-helo-literal",
     "from [192.0.2.99] (203.0.113.5) by EX01.contoso.com (10.0.0.2) with Microsoft SMTP Server"
     " (version=TLS1_2) id 15.2.1; d", PEER),
    ("exchange-online-helo-literal",
     "from [192.0.2.99] (203.0.113.5) by BN8NAM11FT037.mail.protection.outlook.com (10.13.177.1)"
     " with Microsoft SMTP Server id 15.20.1 via Frontend Transport; d", PEER),
    ("gmail-helo-literal",
     "from [192.0.2.99] (h.example. [203.0.113.5]) by mx.google.com with ESMTPS id x1 for <a@b>"
     " (version=TLS1_3); d", PEER),
    ("google-workspace-helo-literal",
     "from [192.0.2.99] (h.example. [203.0.113.5]) by aspmx.l.google.com with ESMTPS id x1; d", PEER),
    ("domino-helo-literal",
     "from [192.0.2.99] ([203.0.113.5]) by notes.example.org (Lotus Domino Release 9.0.1) with"
     " ESMTP id 2014; d", PEER),
    ("courier-helo-literal",
     "from [192.0.2.99] ([::ffff:203.0.113.5]) (AUTH: LOGIN [192.0.2.99]) by mx.example.org with"
     " ESMTPA; d", PEER),
    ("mimecast-helo-literal",
     "from [192.0.2.99] (h.example [203.0.113.5]) by relay.mimecast.com with ESMTP"
     " (version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384) id x; d", PEER),
    ("proofpoint-helo-literal",
     "from [192.0.2.99] (h.example [203.0.113.5]) by mx0a-00123.pphosted.com with ESMTP id x; d", PEER),
    ("barracuda-helo-literal",
     "from [192.0.2.99] (h.example [203.0.113.5]) by mx1.ess.barracudanetworks.com with ESMTP id x; d",
     PEER),
    ("ironport-helo-literal",
     "from unknown (HELO [192.0.2.99]) ([203.0.113.5]) by esa1.example.iphmx.com with ESMTP; d", PEER),
    ("ecelerity-helo-literal",
     "from [192.0.2.99] ([203.0.113.5]:4321 helo=[192.0.2.99]) by mta.example.org (envelope-from"
     " <a@b>) (ecelerity 4.2.1) with ESMTP id x; d", PEER),
    ("unknown-family-helo-equals-injected",
     "from [192.0.2.99] (helo=x) (unknown [203.0.113.5]) by relay.example.org with ESMTP id 1; d", None),
    ("unknown-family-rdns-is-a-literal",
     "from [192.0.2.99] (HELO x) (203.0.113.5) by mail.example.net with SMTP; d", None),
    ("mxgate-own-hop",
     "from [192.0.2.99] ([203.0.113.5]) by gw.contoso.test (mxgate) with ESMTPS id 4f1a; d", PEER),
    ("mxgate-own-hop-without-tcp-info",
     "from [192.0.2.99] by gw.contoso.test (mxgate) with ESMTPS id 4f1a; d", None),
]
