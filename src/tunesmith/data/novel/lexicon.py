"""The miner's word and character tables: punctuation, speech verbs and manner words, titles, surnames,
clause openers, and the patterns built from them.  Data only; the rules that read it are in `clause`,
`names`, `speakers`, `look_back` and `elided`.

    from tunesmith.data.novel.lexicon import VERB_TAIL, TITLE_RE
    VERB_TAIL.search("孔明大笑曰")   # the speech verb closing a clause
    TITLE_RE.match("主簿陈琳谏")      # a title before a name

A change to any table changes the miner's output: tests/test_data_novel.py::test_hand_checked_sample says
whether it still reads the hand-checked records right.
"""

from __future__ import annotations

import re

# -- punctuation ---------------------------------------------------------------------------------------

SENTENCE_END = "。！？!?…"
CLOSERS = "”’」』\"'"
COLONS = "：:"
# Characters that end a clause: the speaker of `X曰：` is looked for after the last of these.
CLAUSE_DELIMS = frozenset("，。！？；：”’」』（）()…,.!?;:　 \t—\"'")
CLAUSE_SPLIT = re.compile("([" + re.escape("".join(sorted(CLAUSE_DELIMS))) + "]+)")
SENTENCE_BREAK = re.compile("[" + re.escape(SENTENCE_END) + "][" + re.escape(SENTENCE_END + CLOSERS) + "]*")

# -- speaker clauses -----------------------------------------------------------------------------------

# A clause before the colon ends in one speech verb (stripped once) after any number of manner words
# (stripped repeatedly): 孔明 | 大笑 | 曰, 行者 | 暗 | 笑 | 道.  云 and 言 are verbs only at the very end, so
# 赵云曰 keeps its 云; single characters that often end a name (遂 in 韩遂, 进 in 何进) are left out.
VERBS = (
    "曰 道 说 云 言 问 答 叫 喊 嚷 喝 骂 叱 报 奏 禀 启 告 诉 谏 劝 叹 呼 吟 诵 称 谢 嘱 应 对 谓 想 忖 念 祝 笑 哭"
    " 吩咐 分付 嘱付 嘱咐 传令 下令 商议 计议 自思 暗想 寻思 暗思 暗忖 沉吟 叫声 道声 开言 开口 答应 回言 言语"
).split()
MODIFIERS = (
    "问 答 叫 喊 嚷 喝 骂 叱 报 奏 禀 启 告 诉 谏 劝 叹 呼 吟 诵 称 谢 嘱 应 对 谓 想 忖 念 祝 说 吩咐 分付"
    " 笑 喜 怒 惊 又 乃 便 因 复 亦 急 忙 皆 俱 都 齐 共 冷 暗 陪"
    " 回 慌 即 就 却 还 只 泣 哭 拜 跪 揖 了 着 之 而 大 心 口 声"
    " 高叫 高呼 厉声 高声 低声 大声 连声 齐声 应声 失声 放声"
    " 一声 仰天 长叹 欣然 愕然 慌忙 连忙 急忙 赶忙 上前 近前 向前"
    " 进前 出班 出列 再拜 拜谢 称谢 顿首 叩头 磕头 点头 摇头"
    " 拍手 抚掌 合掌 顿足 拱手 躬身 起身 施礼 变色 改容 垂泪 流泪"
    " 含泪 掩面 满面 满心 心中 心下 心上 口中 口里 暗暗 呵呵 哈哈 嘻嘻 欢喜 冷笑 暗笑 陪笑 笑嘻嘻 战兢兢 战战兢兢"
    " 心惊胆战 慌了 见了 听了 闻言 听说 听见 看见 见说 闻说 看了 看 止之 止住 扯住 问之 谓之 视之 指之 出 而出 入"
    " 跪下 跪倒 面前 开口 只得 不住 忍不住 的 高 回头 转身 作礼 传旨 眼中 欠身 起来 进言 商议 计议 传令 下令 嘱付 嘱咐"
" 自思 暗想 寻思 暗思 暗忖 沉吟 叫声 道声 开言 答应 回言 言语 各自 暗自 十分 一个个 聚众 一齐 一同 同声 异口同声 跳"
" 施礼 作揖 唱喏 佯 佯醉 佯输 佯笑 佯惊 佯怒 伏地 拜伏 跪伏 伏于地 拜伏于地 哭拜于地 拜于地"
" 伏于地下 具 请 勃然 奋然 愕然 欣然 忿然 毅然 慨然 喟然 怫然 默然 黯然 恍然 忻然 怡然 泰然 哂然"
" 尝 吃惊 称赞 称羡 尽皆 出语 止不住 禁不住 按不住 礼拜 埋怨 抱怨 滴泪 噙泪"
" 拭泪 附耳 低言 扬言 横刀 勒马 以手加额 咬牙 切齿 跌足 捶胸 拱手 举手 攒眉 皱眉"
" 吟诗 作诗 题诗 赋诗 作歌 唱歌 大呼小叫 战呵呵 战呵呵的 战兢兢的 颤巍巍 笑吟吟 笑嘻嘻的 喜孜孜 大惊小怪"
" 大吃一惊 吃了一惊 大吃了一惊 拦住 挡住 拉住 揪住 抓住 按住 扶住 抱住 接住 叫住 喝住 留住 劝住 架住 顶住"
).split()
VERB_TAIL = re.compile("(?:" + "|".join(sorted(set(VERBS), key=len, reverse=True)) + ")$")
MODIFIER_TAIL = re.compile("(?:" + "|".join(sorted(set(MODIFIERS), key=len, reverse=True)) + ")$")
TITLES = (
    "太史令 黄门侍郎 主簿 主薄 长史 参军 司徒 司空 太尉 校尉 中军校尉"
    " 司隶校尉 侍御史 御史 议郎 中常侍 常侍 尚书 仆射 军师 都督 大都督"
    " 丞相 太守 刺史 将军 大将军 大将 上将 部将 先锋 牙将 偏将"
    " 副将 裨将 谋士 谋臣 从事 别驾 治中 功曹 督邮 县令 太傅 太师"
    " 太保 大夫 侍中 黄门 中郎将 郎中 护军 监军 司马 军司马 使者"
    " 近臣 内侍 宦官 国舅 皇叔 元帅 学士 温侯 侍郎 门下侍郎 都护"
    " 都尉 骑都尉 校尉 典军校尉 中郎 小校 牙门将 督将 守将 老将 大将 小将 主将 副将 家将 司农 大司农 司隶 中书 中书令"
    " 廷尉 卫尉 太常 太仆 少府 尚书令 光禄勋 行军司马 参谋 长水校尉 步兵校尉 羽林监 虎贲 散骑常侍 给事中 谏议大夫"
    " 天王 真君 星官 长老 法师 禅师 国师 祖师 老师 菩萨 大仙 太子 公主 娘娘 小姐 员外 驿丞 僧官"
).split()
TITLE_RE = re.compile("(?:" + "|".join(sorted(TITLES, key=len, reverse=True)) + ")")
# Words that open a clause before its subject; tried one at a time only when no name matches at the start.
LEADERS = sorted(
    (
        "却说 且说 话说 只见 但见 忽见 又见 却见 于是 当下 当时 此时"
        " 那时 随即 随后 少顷 须臾 忽然 原来 后来 次日 当日 是日"
        " 早有 只得 不期 谁知 不想 果然 正是 慌得 唬得 吓得 急得 气得 喜得 多亏 幸亏 内有 内中 其中 中有 旁有 傍有"
        " 忽 乃 遂 便 又 却 因 时 但 只 正 即 就 再 复 方 才 好 密 私 潜 悄 当先 为首"
        " 急 也 亦 今 且 这 那 那个 这个 个 为首 再说 惟有 只有 却有 有 真个 果然 好"
    ).split(),
    key=len,
    reverse=True,
)
# 其姊辛宪英 / 长子毋丘甸: a relative named right after; alone (其妻曰) the words are the speaker.
KIN_LEADERS = "其姊 其妹 其兄 其弟 其妻 其母 其父 其子 其女 其侄 其叔 其婿 其甥 长子 次子 幼子 其长子 其次子".split()
LEADERS = sorted(LEADERS + KIN_LEADERS, key=len, reverse=True)
# A name right after one of these is the person spoken to (谓操曰, 问孔明曰, 对行者道), not the speaker.
ADDRESSEE_MARKS = frozenset("谓问对告与向叱骂责指顾见禀劝嘱唤叫教令请拜谢迎奏揖扯召命遣聚付谕招呼赐")
# The same marks minus those that are also surnames or name characters (顾雍, 向宠, 谢旌, 令狐, 县令):
# a leftover subject holding one of these is a verb phrase (谓操, 对行者, 叫小妖), not a name.
VERB_MARKS = ADDRESSEE_MARKS - frozenset("顾向谢令见呼赐")
# Before a name at the end of a clause, these make it the listener (分付鲁肃曰, 报知曹操曰, 关、张曰).
LISTENER_BEFORE = ADDRESSEE_MARKS | frozenset("付呼戒招谕知聚、和同及把被将")
# ... and these make it the speaker: a place or rank before the name (阶下蒯良出曰, 长子孙策曰, 听得杨秋说道).
SPEAKER_BEFORE = frozenset("下子士将有得中上内旁傍前后臣官吏谋")
# Not a character: poems and documents quoted after 曰.
# A character reciting or singing (孔明才醒，口吟诗曰 / 唐妃亦作歌曰) still speaks; these are the narrator's.
DOCUMENT = re.compile(
    r"诗[云叹赞单道]|有诗|后人|^诗曰|[词赞偈颂铭谣]曰|其[略文书词歌]|书[略曰云]|表[略文]|檄[文曰]|榜文|诏[曰略云]|碑[文上曰]"
    r"|写着|上书|内书|疏曰|单道|有篇|古风|祭文|读曰|大书|一联"
)
# An unnamed newcomer (忽闻背后一人问曰, 惟有一小将曰): the text names him later if at all.
NEWCOMER = re.compile(
    r"(?:^|[有见乃忽中下内上后旁傍前里])一(?:[个位员名]|[\u4e00-\u9fff]{0,2}?(?:人|将|者|汉|卒|童|官|僧|道|妖|怪|女|妇))"
)
# Characters that end a rank or a kind of being; a subject the name list does not know ends in one of them.
ROLE_CHARS = "官君后帅妃将僧神仙童婆翁圣魔精妖怪刚吏臣卒兵汉女母士"
ROLE_START = re.compile(
    "(?:众|诸|群|两|二|三|四|八)?[\u4e00-\u9fff]{0,3}?[" + ROLE_CHARS + "](?=[^" + ROLE_CHARS + "]|$)"
)
# Someone unnamed coming on, as the subject of a clause (一人挺身出, 一员少年将军, 一大汉); not 一往一来.
LOOK_BACK_NEWCOMER = re.compile(r"一(?:人|将|员|位|名|少年|大汉|老[者人翁叟]|小[将童卒校])")
# A subject opening with 一 that is a person (一老者, 一个小妖), not a manner (一把揪住, 一齐, 一面).
PERSON_CHARS = "人者汉童官僧道妖怪女妇翁叟卒校婢奴仆军兵将魔精神仙"
ONE_PERSON = re.compile(rf"一(?:[个位员名夥伙]|[\u4e00-\u9fff]{{0,3}}?[{PERSON_CHARS}])")
# Troops or people arriving (忽刺斜里一彪军到, 山后一队人马, 又见两个总角蓬头女子): someone not named yet.
COUNT = re.compile("[两二三四五六七八九十百几数]+[个员名]")
# 一个军士 / 一个巡海的夜叉 / 一个胆量大的和尚 (not 一个杏叶儿, 一个巴掌, 一个个)
ONE_OF_KIND = re.compile(rf"一个(?!个)[^，]{{0,6}}?[{PERSON_CHARS}]")
# Before a counted group these make it an object (领十数个小妖, 将两个妖怪, 与两三个小和尚).
LEADS = frozenset("领将把引带率同与和及被叫唤请打拿捉擒杀斩见点差遣调拨起整聚集会召")
ARRIVING = re.compile(
    rf"一(?:彪|队|枝|支|哨|伙|夥|簇)(?:军|人马|兵|人)|(?<!第)[两二三四五六七八九十百几数]+(?:个|员|名)[^，]{{0,5}}?[{PERSON_CHARS}]"
)
# Unnamed little groups (着两个急去郡中报道, 内中几个道).
UNNAMED = re.compile(r"[两二三四五六七八九十百几数][个人名员口]|众人皆")
PLACE_END = frozenset("后前处间中里外上下边旁内头")
# Relatives named by a possessor: 土地婆儿, 汜妻, 他丈母, 其姊辛宪英.
KIN_AFTER_NAME = re.compile("之?(?:婆儿|婆婆|老婆|娘子|浑家|夫人|妻|母亲|母|之子|之女)")
KIN_NOUNS = frozenset(
    (
        "丈母 丈人 母亲 父亲 老母 老父 妻子 妻 娘子 浑家 老婆 丈夫 儿子 女儿 孩儿"
        " 哥哥 兄长 兄弟 妹子 姐姐 师父 徒弟 姊 弟 兄 母 父 子 女"
    ).split()
)
# Before a name standing apart: a verb taking a person, a rank (唤陈应, 见卞喜, 吴将于诠, 黄门张当).
BEFORE_STANDALONE = ADDRESSEE_MARKS | frozenset("将把与和及同遇迎斩杀擒捉拿门官士军督史尉郎使人是乃")
# A one-character name followed by one of these is half a word (飞身跳跃, 化成一个左慈, 直至城下).
WORD_AFTER_SINGLE = frozenset("身成为作")
# What follows a one-character given name opening a clause (祖于马上谓宁曰, 旋问部将曰).
GIVEN_FOLLOWERS = frozenset(
    "于在乃便即遂亦又急忙大引领率视见闻听谓问曰道笑怒喜惊叹拜回出入与令使教命唤叱喝骂叫提挺纵拍勒拨"
)
# What follows a title standing alone as the subject: a verb of moving or speaking, an adverb.
AFTER_BARE_TITLE = frozenset("回入出进见至到乃便即遂急忙慌亦又再复皆都齐笑怒惊哭拜跪奏禀告曰道问答叫")
# Look-back clause shapes: 惊动本司狱官 (the one stirred), 原来是X的太子 / 乃张飞也 (the one made out),
# 早有曹军飞报 (a messenger), 转出张飞 (someone coming out).
STIRRED = re.compile("(?:惊动|唬醒|惊醒)了?(?:那|这)?(.{2,6})$")
IT_WAS = re.compile("(?:原来是|原来乃是|乃是|却是)(.{2,12})")
WHO_IS = re.compile("乃(.{2,4})也")
THERE_WAS = re.compile("[忽早却又]?有")
CAME_OUT = re.compile("[转闪走撞跳杀拥]出(.{2,6})$")
# A courtesy name given as someone is introduced (表字光蕊 / 字玄德).
COURTESY = re.compile("表字([\u4e00-\u9fff]{2})$")
# Adverbs saying that several speak at once (都道, 俱曰, 齐声道, 一齐叫).
PLURAL_VERB = re.compile("[都俱皆共][^，]{0,6}$|一齐|齐声|同声|齐[叫喊道曰说呼]")
# A plural demonstrative opening a subject the name list does not know (那些妃子, 这些枷锁的和尚).
POINTED = re.compile("(?:那些|这些|那伙|这伙|那班|那一班|这一班)(?=[\u4e00-\u9fff])")
# A group after a place word, as a subject (帐下众将听知, 阶下群臣).
PLACED_GROUP = re.compile(
    "(?:帐下|帐前|阶下|堂下|殿下|殿上|城上|城下|两边|两旁|左右|满朝|外面|里面|门外|座上|座间)?(?:文武)?"
    "([众诸群多][\u4e00-\u9fff]{1,2}?)(?=[皆都齐俱各亦又乃便听闻见入出拜]|$)"
)
# Someone being there (忽有当驾官奏道, 旁有侍臣曰): the noun after 有 is the speaker.
THERE_IS = re.compile("[忽早又却只但旁傍内中正]+有")
# An order to pass a message on: 命传报 / 令人报知 / 使人传语 (the one giving it speaks).
RELAY = re.compile("[命令使教着][人左右从者]*[传通]?(?:报|禀|语|言|话|说)")
# Verbs of hearing: the voice that follows speaks (只听那妖王叫道), not the one who hears.  Not 闻言 / 听说 /
# 闻知 (the one who heard goes on to speak).
HEARD = re.compile("(?:只|但|忽|又|却|猛)?(?:听|闻)[得见]|(?:只|但|忽|又|却|猛)(?:听|闻)(?![言说知之罢了此报])")
# Verbs of answering: an elided 答曰 after 问X曰 is X speaking.
ANSWER = re.compile(r"(?:答|对|应|回)(?:曰|道|言|说)$|^(?:答|对)$")
# Surnames, for a name at the clause start that was a speaker only once (杨锋引兵入曰, 辛毗哭拜于地曰).
# Single characters that are also common words (于 时 和 方 文 国 ...) are left out on purpose.
SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏窦章苏潘葛奚范彭郎鲁韦昌马苗凤俞任袁"
    "柳酆鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬乐傅皮卞伍余卜顾孟黄穆萧尹姚邵湛汪祁毛禹狄米贝臧伏戴谈宋茅庞熊纪舒屈项祝"
    "董梁杜阮蓝闵席季麻贾娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍虞万柯昝管卢莫房裘缪解宗丁宣贲邓郁杭洪诸崔吉钮"
    "龚程嵇邢滑裴陆荣翁荀羊惠甄芮靳汲邴糜焦巴弓牧隗侯宓蓬郗班仇栾甘厉戎祖符刘詹龙叶黎蓟宿怀蒲邰鄂索籍赖卓蔺屠蒙"
    "乔胥苍党翟谭贡劳逄姬申扶堵冉郦雍桑桂濮牛寿扈燕冀郏浦晏柴瞿阎慕茹艾鱼庾暨衡耿弘匡寇阙殳沃蔚夔巩聂晁敖融訾辛阚"
    "简饶曾鞠丰巢关蒯荆游竺逯桓车逢郤"
)
# Right before a one-character name, even common-word surnames are safe (文鸯…鸯曰, 于禁…禁曰).
LOCAL_SURNAMES = SURNAMES | frozenset("文石关云伏")
COMPOUND_SURNAMES = (
    "诸葛 司马 夏侯 公孙 太史 欧阳 皇甫 令狐 上官 尉迟 长孙 慕容"
    " 宇文 淳于 东方 西门 南宫 百里 呼延 钟离 独孤 轩辕 端木 毋丘"
).split()
# A second character that makes surname+X a phrase, not a name (马上, 何故, 吴兵, 张开).
NOT_GIVEN_NAME = frozenset(
    "上下前后来去出入不也之的了着是在有兵军将马人等众故必时曰道说言问日月年"
    "开口手头面里中处州城郡县国地罪鞭剑刀枪弓箭旗书印门家多性些般次位个"
)
# What follows a name in narrative: speech and action verbs, adverbs (孔明笑曰, 杨锋引兵, 辛毗急).
NAME_FOLLOWERS = (
    "曰道说问答笑叫喝骂怒喜惊叹引领率见视谓乃遂便即亦又等听闻急拜告奏谏密慌忙令使教命唤叱挺拍纵提看望接迎朝私暗"
)
FOLLOWER_SET = frozenset(NAME_FOLLOWERS)
# Surname + one of these is a person too (蔡夫人, 伏皇后, 严氏).
SURNAME_TITLES = ("夫人", "皇后", "太后", "贵妃", "娘娘", "小姐", "公子", "氏")
# Anonymous or pronoun subjects: the record keeps speaker "".
# Clause subjects that end a look-back: the speaker is someone unnamed (那二人举枪向孙策乱搠，大叫曰).
ANONYMOUS_GROUPS = ("二人", "两人", "三人", "数人", "众人", "一人", "有人", "其人", "二将")
ANONYMOUS = frozenset(
    "人 一人 有人 或 或人 其人 他 她 彼 此人 某 吾 我 汝 你 之 二人 两个 一个 后人 众人皆 有一人".split()
)
NAME_CHARS = re.compile(r"^[\u4e00-\u9fff]{1,4}$")
NOT_IN_NAMES = frozenset("之了的着不是在有也而以于其所此这把被说曰道问得住过")
# Names and role words do not end in a place, body part or verb ending (半空中, 路旁, 起手, 满眼, 心内) nor
# start with an action (按落云头, 掣铁棒, 搀起, 惊讶, 仰面).
NOT_NAME_END = frozenset("上下中里内边旁前起落住着了过得声眼口面心手脚身")
ACTION_START = frozenset("按掣吩搀翻鼓思惊仰哀微吆咄发勒拔拍挺举抚摇点哭笑叫骂喝跳跑走坐站躬拱转低抬回避闪拥")
# A single character left over that is a verb, adverb or clause opener is no name (问曰, 乃曰, 遂曰).
SINGLE_NOT_NAME = frozenset(w for w in MODIFIERS + LEADERS if len(w) == 1) | frozenset(
    "遂出入来去上下前后曰道言说自等以与在于为将把被向从则及所此其若如吆咄哀发喝叫笑哭战思"
)
# A leftover starting with one of these is an action (去吃酒, 把行者, 自觉), not a subject.
NOT_NAME_START = "之了的着不是在把被将去来到往走跑吃看听使等自入回与同至当闻见望以"
# Doubled endings that are people (婆婆, 哥哥, 猩猩); any other X+YY (慌张张, 战兢兢, 泪汪汪) is a manner word.
KIN_DOUBLES = frozenset("婆公哥姐娘爷奶妹弟叔伯舅姑嫂猩")

LEADER_RE = re.compile("^(?:" + "|".join(map(re.escape, LEADERS)) + ")")
# 他 / 她 as the subject of a clause (not 他们, 他两个, nor 他 as an object: 问他, 打他).
PRONOUN_SUBJECT = re.compile("(?:^|[，。！？；”])(?:你看|只见|那|这)?[他她](?![们两二三几的])")
